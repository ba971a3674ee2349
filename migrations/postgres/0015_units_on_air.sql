-- The units on the air (postgres; kept equivalent to migrations/sqlite/0015_units_on_air.sql):
-- the VLR, written behind by the active controller in short batches, so that the node
-- that takes over (or the same node after a restart) keeps every unit registered under
-- its TMSI. talkgroups is the affiliation, primary first, comma-separated; ck and ik
-- are the session keys of the unit's last authentication. No foreign key: a batch
-- written behind must not fail on a subscriber removed meanwhile; the loader skips and
-- removes the rows of units the HLR no longer holds.
CREATE TABLE units_on_air (
    imsi        TEXT    PRIMARY KEY,
    tmsi        BIGINT  NOT NULL,
    site_id     BIGINT  NOT NULL,
    fleet_id    BIGINT  NOT NULL,
    talkgroups  TEXT    NOT NULL,
    ck          BYTEA   NOT NULL,
    ik          BYTEA   NOT NULL,
    written_at  BIGINT  NOT NULL
);

-- Fenced like every other table (0014).
CREATE TRIGGER trunkd_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON units_on_air
    FOR EACH STATEMENT EXECUTE FUNCTION trunkd_fence();
