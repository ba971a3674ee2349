-- System parameters an operator changes on a running system (src/params.rs), PostgreSQL.
-- Kept equivalent to migrations/sqlite/0011_system_parameters.sql.
CREATE TABLE system_parameters (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
