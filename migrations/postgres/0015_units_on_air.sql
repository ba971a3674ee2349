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

-- The fence of 0014 held the lease row FOR SHARE, which an UPDATE of its expiry waits
-- for: a long write (a large batch written behind) held up the active node's renewal
-- until its lease ran out. FOR KEY SHARE lets renewals by, and still orders every
-- fenced write before or after a takeover, which takes the row FOR UPDATE first.
CREATE OR REPLACE FUNCTION trunkd_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    mine TEXT := current_setting('trunkd.epoch', true);
    leased BIGINT;
BEGIN
    IF mine IS NULL OR mine = '' THEN
        RETURN NULL;
    END IF;
    SELECT epoch INTO leased FROM ha_lease WHERE id = 1 FOR KEY SHARE;
    IF leased IS DISTINCT FROM mine::BIGINT THEN
        RAISE EXCEPTION 'fenced: written as the active node of epoch %, but the lease is at epoch %',
            mine, leased USING ERRCODE = 'TKFEN';
    END IF;
    RETURN NULL;
END $$;

-- Fenced like every other table (0014).
CREATE TRIGGER trunkd_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON units_on_air
    FOR EACH STATEMENT EXECUTE FUNCTION trunkd_fence();
