-- Remember-me secrets, one row per secret a series issued (at most a few per series: see
-- `MAX_SECRETS_PER_SERIES`). A secret is unused (used_at NULL), used once (used_at set), or
-- spent (used again inside the grace window). Only an issued secret that was used counts as
-- reuse; a secret the series never issued (or has forgotten) is simply invalid.
CREATE TABLE refresh_secrets (
    series_id   uuid        NOT NULL REFERENCES refresh_series (id) ON DELETE CASCADE,
    secret_hash bytea       NOT NULL CHECK (octet_length(secret_hash) = 32),
    -- issue order within the series: the oldest are forgotten first
    issued      bigint      GENERATED ALWAYS AS IDENTITY,
    used_at     timestamptz,
    spent       boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (series_id, secret_hash)
);

INSERT INTO refresh_secrets (series_id, secret_hash, used_at, spent)
SELECT id, previous_hash, rotated_at, true FROM refresh_series WHERE previous_hash IS NOT NULL;
INSERT INTO refresh_secrets (series_id, secret_hash)
SELECT id, secret_hash FROM refresh_series;

ALTER TABLE refresh_series DROP COLUMN secret_hash, DROP COLUMN previous_hash,
    DROP COLUMN rotated_at;
