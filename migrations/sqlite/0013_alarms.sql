-- Alarms operators must see to (issue 12), SQLite. Kept equivalent to
-- migrations/postgres/0013_alarms.sql. Times are Unix ms.
--
-- An alarm is raised for a condition on a subject (`site:7`, `slot:7/0/2`,
-- `unit:<imsi>`, `database`, `records`), cleared when the condition is gone, and
-- acknowledged by an operator; it is finished once it is both. A running controller
-- keeps the unfinished ones in memory and writes every change behind (src/controller/
-- alarms.rs); an acknowledgement is written at once with its audit entry. Raised again
-- while cleared and not yet acknowledged, an alarm is reopened (`occurrences` + 1)
-- rather than repeated.
CREATE TABLE alarms (
    id               INTEGER PRIMARY KEY,
    kind             TEXT    NOT NULL,
    subject          TEXT    NOT NULL,
    -- The fleet of a unit's alarm (who may see it); NULL: infrastructure, everyone's.
    fleet            INTEGER,
    detail           TEXT    NOT NULL DEFAULT '',
    raised_at        INTEGER NOT NULL,
    last_raised_at   INTEGER NOT NULL,
    occurrences      INTEGER NOT NULL DEFAULT 1 CHECK (occurrences >= 1),
    acknowledged_at  INTEGER,
    acknowledged_by  TEXT,
    cleared_at       INTEGER,
    CHECK ((acknowledged_at IS NULL) = (acknowledged_by IS NULL))
);
-- At most one open (not cleared) alarm per kind and subject.
CREATE UNIQUE INDEX alarms_open ON alarms (kind, subject) WHERE cleared_at IS NULL;
-- The unfinished ones, which a controller loads at start.
CREATE INDEX alarms_unfinished ON alarms (id) WHERE cleared_at IS NULL OR acknowledged_at IS NULL;

-- The alarm counter shared by every controller on this database: each reserves blocks
-- of ids from it (as call ids, 0005_call_ids.sql), so it numbers alarms in memory, even
-- while the database is away, and no two controllers use the same id.
CREATE TABLE alarm_id_counter (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    next_id  INTEGER NOT NULL CHECK (next_id >= 1)
);
INSERT INTO alarm_id_counter (id, next_id) VALUES (1, 1);
