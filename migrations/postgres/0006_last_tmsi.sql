-- The TMSI a unit last had, next to where it was last seen (postgres; kept equivalent to
-- migrations/sqlite/0006_last_tmsi.sql): ENABLE reaches a unit that is no longer
-- registered at its last site under that TMSI (PROTOCOL.md §5.4).
ALTER TABLE last_location ADD COLUMN tmsi BIGINT;
