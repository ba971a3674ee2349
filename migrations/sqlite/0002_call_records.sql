-- Call detail records, SQLite. Kept equivalent to migrations/postgres/0002_call_records.sql.
-- Times are Unix milliseconds; granted_at is NULL for a request never granted.
CREATE TABLE call_records (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id        INTEGER NOT NULL,
    call_type      TEXT    NOT NULL,
    caller_fleet   INTEGER NOT NULL,
    caller_member  INTEGER NOT NULL,
    target_kind    TEXT    NOT NULL,
    target_fleet   INTEGER NOT NULL,
    target_id      INTEGER NOT NULL,
    sites          TEXT    NOT NULL,
    requested_at   INTEGER NOT NULL,
    granted_at     INTEGER,
    ended_at       INTEGER NOT NULL,
    end_cause      INTEGER NOT NULL,
    preempted      BOOLEAN NOT NULL,
    emergency      BOOLEAN NOT NULL
);
CREATE INDEX call_records_requested ON call_records (requested_at);
