-- The TMSI a unit last had, next to where it was last seen (sqlite; kept equivalent to
-- migrations/postgres/0006_last_tmsi.sql): ENABLE reaches a unit that is no longer
-- registered at its last site under that TMSI (PROTOCOL.md §5.4).
ALTER TABLE last_location ADD COLUMN tmsi INTEGER;
