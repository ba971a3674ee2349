-- Active-standby controllers (README "HA pair", src/ha): the leadership lease, and a
-- fence on every other table.
--
-- One row: the epoch grows by one at every takeover; the active node's lease
-- connection (backend_pid) holds a session advisory lock and renews expires_at, which
-- is computed from this server's clock.
CREATE TABLE ha_lease (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL,
    node_id TEXT,
    backend_pid INTEGER,
    expires_at TIMESTAMPTZ,
    link_address TEXT,
    api_address TEXT
);
INSERT INTO ha_lease (id, epoch) VALUES (1, 0);

-- A session that says it writes for the active node of an epoch (the setting
-- trunkd.epoch, which the active node's connections carry) may write only while that
-- epoch is the lease's: a deposed node that wakes up late writes nothing. FOR SHARE
-- orders each such write before or after a takeover, never across it. Sessions without
-- the setting (the command line, a node without HA) are not fenced.
CREATE FUNCTION trunkd_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    mine TEXT := current_setting('trunkd.epoch', true);
    leased BIGINT;
BEGIN
    IF mine IS NULL OR mine = '' THEN
        RETURN NULL;
    END IF;
    SELECT epoch INTO leased FROM ha_lease WHERE id = 1 FOR SHARE;
    IF leased IS DISTINCT FROM mine::BIGINT THEN
        RAISE EXCEPTION 'fenced: written as the active node of epoch %, but the lease is at epoch %',
            mine, leased USING ERRCODE = 'TKFEN';
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE t TEXT;
BEGIN
    FOR t IN SELECT tablename FROM pg_tables
             WHERE schemaname = current_schema()
               AND tablename NOT IN ('ha_lease', '_sqlx_migrations')
    LOOP
        EXECUTE format('CREATE TRIGGER trunkd_fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE '
                       'ON %I FOR EACH STATEMENT EXECUTE FUNCTION trunkd_fence()', t);
    END LOOP;
END $$;
