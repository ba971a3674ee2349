-- HLR schema, SQLite. Kept equivalent to migrations/postgres/0001_hlr.sql.
-- Times are Unix milliseconds. Identities are stored as their decimal text.

CREATE TABLE fleets (
    id          INTEGER PRIMARY KEY CHECK (id BETWEEN 1 AND 65535),
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE talkgroups (
    fleet_id    INTEGER NOT NULL REFERENCES fleets (id),
    id          INTEGER NOT NULL CHECK (id BETWEEN 1 AND 65535),
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (fleet_id, id)
);

CREATE TABLE sites (
    id                INTEGER PRIMARY KEY CHECK (id BETWEEN 1 AND 4095),
    name              TEXT    NOT NULL,
    carriers          INTEGER NOT NULL CHECK (carriers BETWEEN 1 AND 64),
    slots_per_carrier INTEGER NOT NULL CHECK (slots_per_carrier IN (2, 3, 4, 6)),
    link_key          BLOB    NOT NULL CHECK (length(link_key) = 32),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

CREATE TABLE subscribers (
    imsi               TEXT    PRIMARY KEY CHECK (length(imsi) = 15),
    imei               TEXT    NOT NULL UNIQUE CHECK (length(imei) = 15),
    msisdn             TEXT    UNIQUE,
    fleet_id           INTEGER NOT NULL REFERENCES fleets (id),
    member_id          INTEGER NOT NULL CHECK (member_id BETWEEN 1 AND 65535),
    individual_id      INTEGER NOT NULL UNIQUE CHECK (individual_id BETWEEN 1 AND 16777215),
    k                  BLOB    NOT NULL CHECK (length(k) = 16),
    opc                BLOB    NOT NULL CHECK (length(opc) = 16),
    priority           INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 15),
    perm_group         BOOLEAN NOT NULL,
    perm_private       BOOLEAN NOT NULL,
    perm_emergency     BOOLEAN NOT NULL,
    perm_short_data    BOOLEAN NOT NULL,
    perm_interconnect  BOOLEAN NOT NULL,
    inhibited          BOOLEAN NOT NULL DEFAULT FALSE,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    UNIQUE (fleet_id, member_id)
);

-- Talkgroups a subscriber may affiliate to; position 0 is the default primary.
CREATE TABLE subscriber_talkgroups (
    imsi          TEXT    NOT NULL REFERENCES subscribers (imsi) ON DELETE CASCADE,
    fleet_id      INTEGER NOT NULL,
    talkgroup_id  INTEGER NOT NULL,
    position      INTEGER NOT NULL,
    PRIMARY KEY (imsi, talkgroup_id),
    FOREIGN KEY (fleet_id, talkgroup_id) REFERENCES talkgroups (fleet_id, id)
);

CREATE TABLE last_location (
    imsi     TEXT    PRIMARY KEY REFERENCES subscribers (imsi) ON DELETE CASCADE,
    site_id  INTEGER NOT NULL,
    seen_at  INTEGER NOT NULL
);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    object  TEXT    NOT NULL,
    detail  TEXT    NOT NULL
);
