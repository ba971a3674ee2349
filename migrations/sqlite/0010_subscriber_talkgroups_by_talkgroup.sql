-- Subscribers by permitted talkgroup, SQLite. Kept equivalent to
-- migrations/postgres/0010_subscriber_talkgroups_by_talkgroup.sql. Removing a talkgroup
-- checks (foreign key) and counts the subscribers permitted on it through this index
-- instead of reading every subscriber's talkgroups.
CREATE INDEX subscriber_talkgroups_by_talkgroup ON subscriber_talkgroups (fleet_id, talkgroup_id);
