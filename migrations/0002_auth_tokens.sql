-- Opaque bearer tokens: only their SHA-256 is stored.
SET LOCAL lock_timeout = '5s';

CREATE TABLE auth_tokens (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL CONSTRAINT auth_tokens_user_id_fkey REFERENCES users (id),
    token_hash   bytea NOT NULL CONSTRAINT auth_tokens_token_hash_check CHECK (octet_length(token_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    client_addr  inet,
    CONSTRAINT auth_tokens_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX auth_tokens_user_id_idx ON auth_tokens (user_id) WHERE revoked_at IS NULL;

GRANT SELECT, INSERT, UPDATE ON auth_tokens TO clarity_app;
