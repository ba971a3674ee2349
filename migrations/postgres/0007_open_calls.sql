-- The journal of calls in progress (postgres; kept equivalent to migrations/sqlite/0007_open_calls.sql).
-- The call record writer keeps one row here for every call that is granted and not yet
-- ended (written in the same transaction as the records of ended calls), and moves
-- journal_mark.at forward at each write: every row here was still in progress then.
-- A controller that starts after a crash turns each row into a call record that ended
-- at journal_mark.at with cause 0x28 (controller restart).
CREATE TABLE open_calls (
    call_id        BIGINT PRIMARY KEY,
    call_type      TEXT    NOT NULL,
    caller_fleet   BIGINT NOT NULL,
    caller_member  BIGINT NOT NULL,
    target_kind    TEXT    NOT NULL,
    target_fleet   BIGINT NOT NULL,
    target_id      BIGINT NOT NULL,
    sites          TEXT    NOT NULL,
    requested_at   BIGINT NOT NULL,
    granted_at     BIGINT NOT NULL,
    emergency      BOOLEAN NOT NULL
);
CREATE TABLE journal_mark (
    id  BIGINT PRIMARY KEY CHECK (id = 1),
    at  BIGINT NOT NULL
);
INSERT INTO journal_mark (id, at) VALUES (1, 0);
