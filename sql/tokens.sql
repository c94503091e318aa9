-- name: insert_token^
-- Issue a token. Params: user_id, token_hash, max_age_seconds, client_addr.
INSERT INTO auth_tokens (user_id, token_hash, expires_at, client_addr)
VALUES (%(user_id)s, %(token_hash)s, now() + make_interval(secs => %(max_age_seconds)s), %(client_addr)s::inet)
RETURNING id, created_at, expires_at;

-- name: get_token_actor^
-- Authenticate a bearer token and, in the same round trip, set the transaction's actor context
-- and refresh the token's idle clock (at most every 30 s, to keep reads cheap).
-- Params: token_hash, idle_seconds, request_id. Returns: token_id, user_id, role.
WITH live AS (
    SELECT t.id AS token_id, t.last_used_at, u.id AS user_id, u.role
      FROM auth_tokens t
      JOIN users u ON u.id = t.user_id
     WHERE t.token_hash = %(token_hash)s
       AND t.revoked_at IS NULL
       AND t.expires_at > now()
       AND t.last_used_at > now() - make_interval(secs => %(idle_seconds)s)
       AND u.disabled_at IS NULL
), touched AS (
    UPDATE auth_tokens SET last_used_at = now()
      FROM live
     WHERE auth_tokens.id = live.token_id
       AND live.last_used_at < now() - interval '30 seconds'
)
SELECT token_id, user_id, role,
       set_config('clarity.actor_id', user_id::text, true) IS NOT NULL
       AND set_config('clarity.actor_role', role, true) IS NOT NULL
       AND set_config('clarity.request_id', %(request_id)s, true) IS NOT NULL AS context_set
  FROM live;

-- name: revoke_token!
-- Revoke one token (logout). Params: id.
UPDATE auth_tokens SET revoked_at = now() WHERE id = %(id)s AND revoked_at IS NULL;

-- name: revoke_all_user_tokens!
-- Revoke every live token of a user (disable, password change). Params: user_id.
UPDATE auth_tokens SET revoked_at = now() WHERE user_id = %(user_id)s AND revoked_at IS NULL;

-- name: list_tokens_for_user
-- A user's live sessions, most recently used first. Params: user_id, idle_seconds.
SELECT id, created_at, last_used_at, expires_at, host(client_addr) AS client_addr
  FROM auth_tokens
 WHERE user_id = %(user_id)s
   AND revoked_at IS NULL
   AND expires_at > now()
   AND last_used_at > now() - make_interval(secs => %(idle_seconds)s)
 ORDER BY last_used_at DESC, id;

-- name: revoke_own_token!
-- Revoke one of a user's own tokens. Params: id, user_id.
UPDATE auth_tokens SET revoked_at = now()
 WHERE id = %(id)s AND user_id = %(user_id)s AND revoked_at IS NULL;
