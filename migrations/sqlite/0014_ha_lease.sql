-- The leadership lease of active-standby controllers (migrations/postgres/0014). HA
-- needs PostgreSQL; the table is here so that both schemas stay alike.
CREATE TABLE ha_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL,
    node_id TEXT,
    backend_pid INTEGER,
    expires_at INTEGER,
    link_address TEXT,
    api_address TEXT
);
INSERT INTO ha_lease (id, epoch) VALUES (1, 0);
