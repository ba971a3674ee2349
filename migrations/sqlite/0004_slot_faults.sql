-- Slots (or whole carriers, slot = 255) an operator took out of service, SQLite. Kept
-- equivalent to migrations/postgres/0004_slot_faults.sql.
CREATE TABLE slot_faults (
    site_id  INTEGER NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    carrier  INTEGER NOT NULL,
    slot     INTEGER NOT NULL,
    since    INTEGER NOT NULL,
    PRIMARY KEY (site_id, carrier, slot)
);
