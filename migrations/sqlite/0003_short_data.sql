-- Short data waiting for delivery (store and forward), SQLite. Kept equivalent to
-- migrations/postgres/0003_short_data.sql. One row per recipient; removed when the
-- recipient's gateway acknowledges it, or when it expires. Times are Unix ms.
CREATE TABLE short_data (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient_imsi  TEXT    NOT NULL REFERENCES subscribers (imsi) ON DELETE CASCADE,
    source_fleet    INTEGER NOT NULL,
    source_member   INTEGER NOT NULL,
    payload         BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX short_data_recipient ON short_data (recipient_imsi);
