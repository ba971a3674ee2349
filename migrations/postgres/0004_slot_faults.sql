-- Slots (or whole carriers, slot = 255) an operator took out of service, PostgreSQL. Kept
-- equivalent to migrations/sqlite/0004_slot_faults.sql.
CREATE TABLE slot_faults (
    site_id  BIGINT  NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    carrier  BIGINT  NOT NULL,
    slot     BIGINT  NOT NULL,
    since    BIGINT  NOT NULL,
    PRIMARY KEY (site_id, carrier, slot)
);
