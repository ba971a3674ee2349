-- The call counter shared by every controller on this database (postgres; kept equivalent
-- to migrations/sqlite/0005_call_ids.sql). Controllers reserve blocks of numbers from it,
-- so call ids stay unique across restarts and across controllers (PROTOCOL.md §4).
-- It starts after the highest call id already recorded.
CREATE TABLE call_id_counter (
    id       BIGINT PRIMARY KEY CHECK (id = 1),
    next_id  BIGINT NOT NULL CHECK (next_id >= 1)
);
INSERT INTO call_id_counter (id, next_id)
    SELECT 1, COALESCE(MAX(call_id), 0) + 1 FROM call_records;
