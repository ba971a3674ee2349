-- Short data waiting for delivery (store and forward), PostgreSQL. Kept equivalent to
-- migrations/sqlite/0003_short_data.sql. One row per recipient; removed when the
-- recipient's gateway acknowledges it, or when it expires. Times are Unix ms.
CREATE TABLE short_data (
    id              BIGSERIAL PRIMARY KEY,
    recipient_imsi  TEXT    NOT NULL REFERENCES subscribers (imsi) ON DELETE CASCADE,
    source_fleet    BIGINT  NOT NULL,
    source_member   BIGINT  NOT NULL,
    payload         BYTEA   NOT NULL,
    created_at      BIGINT  NOT NULL,
    expires_at      BIGINT  NOT NULL
);
CREATE INDEX short_data_recipient ON short_data (recipient_imsi);
