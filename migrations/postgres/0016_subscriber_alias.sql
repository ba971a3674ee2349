-- A subscriber's alias (postgres; kept equivalent to migrations/sqlite/0016_subscriber_alias.sql):
-- the name dispatchers know the unit by ("Car 12"), shown beside its fleet/member and
-- searched case-insensitively by prefix. Optional, not unique.
ALTER TABLE subscribers ADD COLUMN alias TEXT;
