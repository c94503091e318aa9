-- name: insert_emergency_access_grant^
-- Record a grant. Params: id, patient_id, provider_id, reason, reason_key_id, minutes.
INSERT INTO emergency_access_grants (id, patient_id, provider_id, reason, reason_key_id, expires_at)
VALUES (%(id)s, %(patient_id)s, %(provider_id)s, %(reason)s, %(reason_key_id)s,
        now() + make_interval(mins => %(minutes)s))
RETURNING id, patient_id, provider_id, reason, reason_key_id, granted_at, expires_at;

-- name: list_emergency_access_grants
-- Grants, newest first, after a keyset cursor; only active ones when active_only.
-- Params: active_only, before_granted_at, before_id, limit.
SELECT id, patient_id, provider_id, reason, reason_key_id, granted_at, expires_at
  FROM emergency_access_grants
 WHERE (NOT %(active_only)s OR expires_at > now())
   AND (%(before_granted_at)s::timestamptz IS NULL
        OR (granted_at, id) < (%(before_granted_at)s::timestamptz, %(before_id)s::uuid))
 ORDER BY granted_at DESC, id DESC
 LIMIT %(limit)s;

-- name: count_emergency_access_grants_not_under_key$
-- How many grants' reasons are enciphered under another key. Params: key_id.
SELECT count(*) FROM emergency_access_grants WHERE reason_key_id <> %(key_id)s;

-- name: list_emergency_access_grants_not_under_key
-- A batch of grants whose reason is under another key, for rotation.
-- Params: key_id, after_id (null for the first batch), limit.
SELECT id, reason, reason_key_id
  FROM emergency_access_grants
 WHERE reason_key_id <> %(key_id)s
   AND (%(after_id)s::uuid IS NULL OR id > %(after_id)s::uuid)
 ORDER BY id
 LIMIT %(limit)s;

-- name: update_emergency_access_grant_reason!
-- Store a re-enciphered reason (grants never change otherwise). Params: id, old_key_id, reason, reason_key_id.
UPDATE emergency_access_grants
   SET reason = %(reason)s, reason_key_id = %(reason_key_id)s
 WHERE id = %(id)s AND reason_key_id = %(old_key_id)s;
