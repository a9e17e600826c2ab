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

-- The writes of the validating statement, called from it only when needed, so that most
-- validations are a plain read. Each works on the current row: a touch re-checks that it is
-- still due (concurrent requests write once), an UPDATE never re-creates a deleted session,
-- and the world is resynced only if the character is still the one the statement saw.
CREATE FUNCTION tower_session_auth_touch(
    p_id uuid, p_now timestamptz, p_due_before timestamptz, p_slide_to timestamptz,
    p_character_id bigint, p_world_id text
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sessions SET
        last_activity = CASE WHEN last_activity <= p_due_before THEN p_now
                             ELSE last_activity END,
        expires_at = CASE WHEN last_activity <= p_due_before THEN COALESCE(p_slide_to, expires_at)
                          ELSE expires_at END,
        world_id = CASE WHEN p_world_id IS NOT NULL
                             AND character_id IS NOT DISTINCT FROM p_character_id
                        THEN p_world_id ELSE world_id END
    WHERE id = p_id
      AND (last_activity <= p_due_before
           OR (p_world_id IS NOT NULL AND world_id IS DISTINCT FROM p_world_id
               AND character_id IS NOT DISTINCT FROM p_character_id));
    RETURN FOUND;
END $$;

CREATE FUNCTION tower_session_auth_expire(p_id uuid, p_now timestamptz)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sessions
    WHERE id = p_id AND (expires_at <= p_now OR absolute_expires_at <= p_now);
    RETURN FOUND;
END $$;

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
