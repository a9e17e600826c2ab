-- Sessions, keyed by the SHA-256 of the token. The columns that the touch writes
-- (last_activity, expires_at) and world_id are left unindexed, and the fillfactor leaves room
-- in each page, so a touch is a HOT update that rewrites no index.
CREATE TABLE sessions (
    id                  uuid        PRIMARY KEY,
    token_hash          bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    user_id             bigint      NOT NULL,
    character_id        bigint,
    world_id            text,
    client_type         text        NOT NULL DEFAULT 'unknown',
    ip                  inet,
    user_agent          text,
    created_at          timestamptz NOT NULL,
    last_activity       timestamptz NOT NULL,
    expires_at          timestamptz,
    absolute_expires_at timestamptz,
    -- when the user last proved their credentials; a remember-me refresh keeps the login's
    authenticated_at    timestamptz NOT NULL,
    refreshed           boolean     NOT NULL DEFAULT false,
    series_id           uuid
) WITH (fillfactor = 80);

-- Listing and revoking a user's sessions, and the single-session limit at login.
CREATE INDEX sessions_user_id_created_at_idx ON sessions (user_id, created_at);

-- Ending a remember-me series ends its sessions.
CREATE INDEX sessions_series_id_idx ON sessions (series_id) WHERE series_id IS NOT NULL;

-- Remember-me series: the current secret's hash, and the one it superseded (for the grace
-- window and reuse detection).
CREATE TABLE refresh_series (
    id                  uuid        PRIMARY KEY,
    user_id             bigint      NOT NULL,
    secret_hash         bytea       NOT NULL CHECK (octet_length(secret_hash) = 32),
    previous_hash       bytea,
    rotated_at          timestamptz,
    created_at          timestamptz NOT NULL,
    last_used_at        timestamptz NOT NULL,
    expires_at          timestamptz,
    absolute_expires_at timestamptz
);

CREATE INDEX refresh_series_user_id_idx ON refresh_series (user_id);
