-- The journal of calls in progress (sqlite; kept equivalent to migrations/postgres/0007_open_calls.sql).
-- The call record writer keeps one row here for every call that is granted and not yet
-- ended (written in the same transaction as the records of ended calls), and moves
-- journal_mark.at forward at each write: every row here was still in progress then.
-- A controller that starts after a crash turns each row into a call record that ended
-- at journal_mark.at with cause 0x28 (controller restart).
CREATE TABLE open_calls (
    call_id        INTEGER PRIMARY KEY,
    call_type      TEXT    NOT NULL,
    caller_fleet   INTEGER NOT NULL,
    caller_member  INTEGER NOT NULL,
    target_kind    TEXT    NOT NULL,
    target_fleet   INTEGER NOT NULL,
    target_id      INTEGER NOT NULL,
    sites          TEXT    NOT NULL,
    requested_at   INTEGER NOT NULL,
    granted_at     INTEGER NOT NULL,
    emergency      BOOLEAN NOT NULL
);
CREATE TABLE journal_mark (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  INTEGER NOT NULL
);
INSERT INTO journal_mark (id, at) VALUES (1, 0);
