-- Idempotency keys (the Idempotency-Key request header, draft-ietf-httpapi-idempotency-key-header):
-- the answer to a write that carried a key, kept for CLARITY_IDEMPOTENCY_TTL_SECONDS so that a
-- retry gets that answer again instead of doing the write twice. A key is written in the same
-- transaction as the write it answers for (clarity.api.idempotency), so both exist or neither.
--
-- The client's key is stored as its SHA-256 only (clients choose it; it may not be random).
-- The answer (status, headers, body) usually holds PHI: it is one AES-GCM envelope bound to its
-- principal and key, as patients' PHI is bound to its row; the request's fingerprint travels
-- inside it too, so the table holds no digest of a request body either.
SET LOCAL lock_timeout = '5s';

CREATE TABLE idempotency_keys (
    principal_id    uuid NOT NULL CONSTRAINT idempotency_keys_principal_id_fkey REFERENCES users (id),
    key_hash        bytea NOT NULL CONSTRAINT idempotency_keys_key_hash_check CHECK (octet_length(key_hash) = 32),
    response        bytea NOT NULL,
    response_key_id text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (principal_id, key_hash)
);
-- The purge's walk over expired keys.
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);

-- DELETE for the purge; UPDATE for replacing an expired key the same principal uses again.
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO clarity_app;

-- Row-level security: a principal sees and writes only their own keys, whatever their role (an
-- admin does not see another user's). The purge acts as the 'maintenance' actor
-- (clarity.idempotency.MAINTENANCE; no user can hold that role, users_role_check), which sees,
-- locks and deletes expired keys of every principal, and nothing else: not a live key, nor a row
-- of any other table.
ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;

CREATE POLICY idempotency_keys_own ON idempotency_keys
    USING (principal_id = clarity_actor_id())
    WITH CHECK (principal_id = clarity_actor_id());

CREATE POLICY idempotency_keys_purge_select ON idempotency_keys FOR SELECT
    USING (clarity_actor_role() = 'maintenance' AND expires_at <= now());

CREATE POLICY idempotency_keys_purge_delete ON idempotency_keys FOR DELETE
    USING (clarity_actor_role() = 'maintenance' AND expires_at <= now());

-- The purge locks the keys it deletes (FOR UPDATE SKIP LOCKED, so two purges never wait for
-- each other), which takes an UPDATE policy too; WITH CHECK (false) lets it change nothing.
CREATE POLICY idempotency_keys_purge_lock ON idempotency_keys FOR UPDATE
    USING (clarity_actor_role() = 'maintenance' AND expires_at <= now())
    WITH CHECK (false);
