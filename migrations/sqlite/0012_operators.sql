-- Operators of the API, their sessions and the keys that sign their tokens, SQLite.
-- Kept equivalent to migrations/postgres/0012_operators.sql. Times are Unix ms.

-- An operator: an argon2id password hash (PHC string), a role, and the fleets it is
-- limited to (comma-separated ids; empty: every fleet). `generation` grows at every
-- change of password, role, fleets or state: tokens of an older generation are refused.
CREATE TABLE operators (
    name           TEXT    PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    password_hash  TEXT    NOT NULL,
    role           TEXT    NOT NULL CHECK (role IN ('admin', 'dispatcher', 'viewer')),
    fleets         TEXT    NOT NULL DEFAULT '',
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    generation     INTEGER NOT NULL DEFAULT 1,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

-- Refresh tokens, by the SHA-256 of the token (the token itself is never stored). A
-- family is one login's chain of rotations (RFC 9700 §4.14.2).
CREATE TABLE refresh_tokens (
    hash        BLOB    PRIMARY KEY CHECK (length(hash) = 32),
    family      TEXT    NOT NULL,
    operator    TEXT    NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    generation  INTEGER NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    rotated_at  INTEGER,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

-- Keys that sign access tokens (EdDSA). The newest is the signing key; the others
-- still validate until `retire_at`.
CREATE TABLE signing_keys (
    kid          TEXT    PRIMARY KEY,
    private_key  BLOB    NOT NULL,
    public_key   BLOB    NOT NULL CHECK (length(public_key) = 32),
    created_at   INTEGER NOT NULL,
    retire_at    INTEGER
);
