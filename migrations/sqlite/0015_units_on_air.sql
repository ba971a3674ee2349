-- The units on the air (sqlite; kept equivalent to migrations/postgres/0015_units_on_air.sql):
-- the VLR, written behind by the controller in short batches, so that it keeps every
-- unit registered under its TMSI across a restart. talkgroups is the affiliation,
-- primary first, comma-separated; ck and ik are the session keys of the unit's last
-- authentication. No foreign key: a batch written behind must not fail on a subscriber
-- removed meanwhile; the loader skips and removes the rows of units the HLR no longer
-- holds.
CREATE TABLE units_on_air (
    imsi        TEXT    PRIMARY KEY,
    tmsi        INTEGER NOT NULL,
    site_id     INTEGER NOT NULL,
    fleet_id    INTEGER NOT NULL,
    talkgroups  TEXT    NOT NULL,
    ck          BLOB    NOT NULL,
    ik          BLOB    NOT NULL,
    written_at  INTEGER NOT NULL
);
