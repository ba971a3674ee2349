-- System parameters an operator changes on a running system (src/params.rs), SQLite.
-- Kept equivalent to migrations/postgres/0011_system_parameters.sql.
CREATE TABLE system_parameters (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
