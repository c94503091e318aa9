-- name: insert_emergency_access_grant^
-- Record a grant. Params: id, patient_id, provider_id, reason, reason_key_id, minutes.
INSERT INTO emergency_access_grants (id, patient_id, provider_id, reason, reason_key_id, expires_at)
VALUES (%(id)s, %(patient_id)s, %(provider_id)s, %(reason)s, %(reason_key_id)s,
        now() + make_interval(mins => %(minutes)s))
RETURNING id, patient_id, provider_id, reason, reason_key_id, granted_at, expires_at;

-- name: list_emergency_access_grants
-- Grants, newest first, after a keyset cursor; only active ones when active_only.
-- Params: active_only, before_granted_at, before_id, limit.
-- plan: custom
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
-- plan: custom
SELECT id, reason, reason_key_id
  FROM emergency_access_grants
 WHERE reason_key_id <> %(key_id)s
   AND (%(after_id)s::uuid IS NULL OR id > %(after_id)s::uuid)
 ORDER BY id
 LIMIT %(limit)s;

-- name: update_emergency_access_grant_reasons
-- Store a batch of re-enciphered reasons in one statement (grants never change otherwise).
-- Params: ids, old_key_ids, envelopes, key_ids (one element per grant). Returns: id of each stored.
UPDATE emergency_access_grants g
   SET reason = v.reason, reason_key_id = v.reason_key_id
  FROM unnest(%(ids)s::uuid[], %(old_key_ids)s::text[], %(envelopes)s::bytea[], %(key_ids)s::text[])
       AS v (id, old_key_id, reason, reason_key_id)
 WHERE g.id = v.id AND g.reason_key_id = v.old_key_id
RETURNING g.id;
