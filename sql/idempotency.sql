-- name: lock_idempotency_key$
-- Take the transaction-scoped lock on one principal's key, or answer false at once when another
-- request holds it (that request is still running: the caller answers 409). Statements after
-- this one see every key committed before the lock was taken. 7302203 is Clarity's arbitrary,
-- fixed advisory-lock class for idempotency keys (the two-key form; sign-ins use 7302202).
-- Params: lock_key (a 32-bit digest of the principal and the key).
SELECT pg_try_advisory_xact_lock(7302203, %(lock_key)s::integer);

-- name: get_idempotency_key^
-- The live answer stored under the actor's key; no row when there is none or it has expired.
-- Params: actor_id, key_hash. Returns: response, response_key_id.
-- plan: generic
-- A primary-key lookup: one plan serves every principal and key.
SELECT response, response_key_id
  FROM idempotency_keys
 WHERE principal_id = %(actor_id)s AND key_hash = %(key_hash)s AND expires_at > now();

-- name: upsert_idempotency_key$
-- Store the answer under the actor's key for ttl_seconds, replacing the key's expired answer if
-- there is one; no row when a live answer is stored already (the caller's lock makes that
-- impossible; the caller rolls back if it happens anyway).
-- Params: actor_id, key_hash, response, response_key_id, ttl_seconds. Returns: expires_at.
INSERT INTO idempotency_keys AS k (principal_id, key_hash, response, response_key_id, expires_at)
VALUES (%(actor_id)s, %(key_hash)s, %(response)s, %(response_key_id)s,
        now() + make_interval(secs => %(ttl_seconds)s))
ON CONFLICT (principal_id, key_hash) DO UPDATE
   SET response = EXCLUDED.response, response_key_id = EXCLUDED.response_key_id,
       created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
 WHERE k.expires_at <= now()
RETURNING k.expires_at;

-- name: delete_expired_idempotency_keys!
-- Delete up to `limit` expired keys, oldest first, skipping any another purge (or a request
-- reusing its key) holds. Run as the maintenance actor, whose row-level security policies show
-- expired keys of every principal and nothing else. The outer test of expires_at is checked
-- again on a row that changed meanwhile. Params: limit.
DELETE FROM idempotency_keys
 WHERE expires_at <= now()
   AND (principal_id, key_hash) IN (SELECT principal_id, key_hash
                                      FROM idempotency_keys
                                     WHERE expires_at <= now()
                                     ORDER BY expires_at
                                     LIMIT %(limit)s
                                       FOR UPDATE SKIP LOCKED);
