-- name: insert_medical_record^
-- Add a record (never changed afterwards); the author is the actor; recorded_at null means now.
-- An amendment (amends_id not null) must name a record of the same patient and type: no row
-- is inserted otherwise, before any constraint could tell whether a record out of the actor's
-- sight exists. The constraints still decide: medical_records_amends_id_fkey (same patient
-- and type) and medical_records_amends_id_key (a record is amended once).
-- Params: id, patient_id, type, body, body_key_id, author_id, recorded_at, amends_id.
-- plan: generic
-- At most one index probe for amends_id, whatever the values: nothing to plan per execution.
INSERT INTO medical_records (id, patient_id, type, body, body_key_id, author_id, recorded_at, amends_id)
SELECT %(id)s, %(patient_id)s, %(type)s, %(body)s, %(body_key_id)s, %(author_id)s,
       coalesce(%(recorded_at)s::timestamptz, now()), %(amends_id)s::uuid
 WHERE %(amends_id)s::uuid IS NULL
    OR EXISTS (SELECT 1 FROM medical_records a
                WHERE a.id = %(amends_id)s::uuid AND a.patient_id = %(patient_id)s::uuid
                  AND a.type = %(type)s::text)
RETURNING id, patient_id, type, body, body_key_id, author_id, recorded_at, created_at, amends_id,
          NULL::uuid AS superseded_by;

-- name: list_medical_records
-- One page of a patient's records, newest recorded first, after a keyset cursor, with the
-- record amending each one (superseded_by, null for the latest version) in the same statement.
-- Optional filters (null = none): type; current_only keeps only latest versions.
-- The caller has checked that the actor sees the patient (row-level security backs it up).
-- Params: patient_id, type, current_only, before_recorded_at, before_id, limit.
-- plan: custom
SELECT r.id, r.patient_id, r.type, r.body, r.body_key_id, r.author_id, r.recorded_at, r.created_at,
       r.amends_id, s.id AS superseded_by
  FROM medical_records r
  LEFT JOIN medical_records s ON s.amends_id = r.id
 WHERE r.patient_id = %(patient_id)s
   AND (%(type)s::text IS NULL OR r.type = %(type)s::text)
   AND (NOT %(current_only)s OR s.id IS NULL)
   AND (%(before_recorded_at)s::timestamptz IS NULL
        OR (r.recorded_at, r.id) < (%(before_recorded_at)s::timestamptz, %(before_id)s::uuid))
 ORDER BY r.recorded_at DESC, r.id DESC
 LIMIT %(limit)s;

-- name: list_medical_record_chain
-- A record visible to the actor (its patient live and the actor's, an admin's, or under an
-- active emergency grant) with its whole amendment chain: the records it amends back to the
-- original and those amending it up to the latest, ordered by position (the original first).
-- position is relative to the record asked for (0; negative before it). No rows: absent or
-- out of scope. Params: id, actor_id, actor_is_admin.
-- Returns the record columns, superseded_by, position, provider_id (the patient's).
-- plan: generic
-- One primary-key probe finds the record (the scope only filters it); the chain follows indexes.
WITH RECURSIVE
target AS (
    SELECT r.id, p.provider_id
      FROM medical_records r
      JOIN patients p ON p.id = r.patient_id
     WHERE r.id = %(id)s
       AND p.deleted_at IS NULL
       AND (%(actor_is_admin)s OR p.provider_id = %(actor_id)s
            OR clarity_holds_emergency_grant(p.id, %(actor_id)s))
),
earlier (id, amends_id, position) AS (
    SELECT r.id, r.amends_id, 0 FROM medical_records r JOIN target t ON t.id = r.id
    UNION ALL
    SELECT r.id, r.amends_id, e.position - 1 FROM medical_records r JOIN earlier e ON r.id = e.amends_id
) CYCLE id SET in_cycle USING path,
later (id, position) AS (
    SELECT t.id, 0 FROM target t
    UNION ALL
    SELECT r.id, l.position + 1 FROM medical_records r JOIN later l ON r.amends_id = l.id
) CYCLE id SET in_cycle USING path,
chain AS (
    SELECT id, position FROM earlier WHERE NOT in_cycle
    UNION
    SELECT id, position FROM later WHERE NOT in_cycle
)
SELECT r.id, r.patient_id, r.type, r.body, r.body_key_id, r.author_id, r.recorded_at, r.created_at,
       r.amends_id, s.id AS superseded_by, c.position, t.provider_id
  FROM chain c
  JOIN medical_records r ON r.id = c.id
  LEFT JOIN medical_records s ON s.amends_id = r.id
 CROSS JOIN target t
 ORDER BY c.position;

-- name: count_medical_records_not_under_key$
-- How many record bodies are enciphered under another key. Params: key_id.
SELECT count(*) FROM medical_records WHERE body_key_id <> %(key_id)s;

-- name: list_medical_records_not_under_key
-- A batch of records whose body is under another key, for rotation.
-- Params: key_id, after_id (null for the first batch), limit.
-- plan: custom
SELECT id, body, body_key_id
  FROM medical_records
 WHERE body_key_id <> %(key_id)s
   AND (%(after_id)s::uuid IS NULL OR id > %(after_id)s::uuid)
 ORDER BY id
 LIMIT %(limit)s;

-- name: update_medical_record_bodies
-- Store a batch of re-enciphered bodies in one statement: the one change the append-only
-- trigger allows (content unchanged, key id changed). Params: ids, old_key_ids, envelopes,
-- key_ids (one element per record). Returns: id of each stored.
UPDATE medical_records r
   SET body = v.body, body_key_id = v.body_key_id
  FROM unnest(%(ids)s::uuid[], %(old_key_ids)s::text[], %(envelopes)s::bytea[], %(key_ids)s::text[])
       AS v (id, old_key_id, body, body_key_id)
 WHERE r.id = v.id AND r.body_key_id = v.old_key_id
RETURNING r.id;
