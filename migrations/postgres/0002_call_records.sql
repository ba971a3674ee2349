-- Call detail records, PostgreSQL. Kept equivalent to migrations/sqlite/0002_call_records.sql.
-- Times are Unix milliseconds; granted_at is NULL for a request never granted.
CREATE TABLE call_records (
    id             BIGSERIAL PRIMARY KEY,
    call_id        BIGINT  NOT NULL,
    call_type      TEXT    NOT NULL,
    caller_fleet   BIGINT  NOT NULL,
    caller_member  BIGINT  NOT NULL,
    target_kind    TEXT    NOT NULL,
    target_fleet   BIGINT  NOT NULL,
    target_id      BIGINT  NOT NULL,
    sites          TEXT    NOT NULL,
    requested_at   BIGINT  NOT NULL,
    granted_at     BIGINT,
    ended_at       BIGINT  NOT NULL,
    end_cause      BIGINT  NOT NULL,
    preempted      BOOLEAN NOT NULL,
    emergency      BOOLEAN NOT NULL
);
CREATE INDEX call_records_requested ON call_records (requested_at);
