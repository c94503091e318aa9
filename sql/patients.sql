-- name: get_patient^
-- One live patient visible to the actor: an admin sees all, a provider their own and those
-- they hold an active emergency-access grant for. Params: id, actor_id, actor_is_admin.
-- plan: generic
-- One primary-key probe finds the row whatever the values; the actor scope only filters it.
SELECT id, provider_id, status, phi, phi_key_id, version, created_at, updated_at
  FROM patients
 WHERE id = %(id)s
   AND deleted_at IS NULL
   AND (%(actor_is_admin)s OR provider_id = %(actor_id)s
        OR clarity_holds_emergency_grant(patients.id, %(actor_id)s));

-- name: get_patient_access^
-- Whether a live patient is visible to the actor (as get_patient), without reading its PHI.
-- Params: id, actor_id, actor_is_admin. Returns: id, provider_id.
-- plan: generic
-- One primary-key probe finds the row whatever the values; the actor scope only filters it.
SELECT id, provider_id
  FROM patients
 WHERE id = %(id)s
   AND deleted_at IS NULL
   AND (%(actor_is_admin)s OR provider_id = %(actor_id)s
        OR clarity_holds_emergency_grant(patients.id, %(actor_id)s));

-- name: list_patients
-- Live patients of the actor (an admin: all; emergency grants open single patients by id,
-- they do not widen lists), in creation order after a keyset cursor, with optional
-- filters (null = no filter): status, birth-year range, and blind indexes of MRN, email and
-- last name (arrays: the value's index under each configured key, matched in the main and
-- the rotation column). Params: actor_id, actor_is_admin, status, birth_year_from,
-- birth_year_to, mrn_bidx, email_bidx, last_name_bidx, after_created_at, after_id, limit.
-- A generic plan cannot tell a provider's scope from an admin's, nor which filter is set:
-- plan: custom
SELECT id, provider_id, status, phi, phi_key_id, version, created_at, updated_at
  FROM patients
 WHERE deleted_at IS NULL
   AND (%(actor_is_admin)s OR provider_id = %(actor_id)s)
   AND (%(status)s::text IS NULL OR status = %(status)s::text)
   AND (%(birth_year_from)s::smallint IS NULL OR birth_year >= %(birth_year_from)s::smallint)
   AND (%(birth_year_to)s::smallint IS NULL OR birth_year <= %(birth_year_to)s::smallint)
   AND (%(mrn_bidx)s::bytea[] IS NULL OR mrn_bidx = ANY(%(mrn_bidx)s::bytea[])
        OR mrn_bidx_next = ANY(%(mrn_bidx)s::bytea[]))
   AND (%(email_bidx)s::bytea[] IS NULL OR email_bidx = ANY(%(email_bidx)s::bytea[])
        OR email_bidx_next = ANY(%(email_bidx)s::bytea[]))
   AND (%(last_name_bidx)s::bytea[] IS NULL OR last_name_bidx = ANY(%(last_name_bidx)s::bytea[])
        OR last_name_bidx_next = ANY(%(last_name_bidx)s::bytea[]))
   AND (%(after_created_at)s::timestamptz IS NULL
        OR (created_at, id) > (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY created_at, id
 LIMIT %(limit)s;

-- name: insert_patient^
-- Create a patient. Params: id, provider_id, status, birth_year, mrn_bidx, email_bidx,
-- last_name_bidx, their *_next (null unless a blind-index rotation is under way), phi, phi_key_id.
INSERT INTO patients (id, provider_id, status, birth_year, mrn_bidx, email_bidx, last_name_bidx,
                      mrn_bidx_next, email_bidx_next, last_name_bidx_next, phi, phi_key_id)
VALUES (%(id)s, %(provider_id)s, %(status)s, %(birth_year)s, %(mrn_bidx)s, %(email_bidx)s,
        %(last_name_bidx)s, %(mrn_bidx_next)s, %(email_bidx_next)s, %(last_name_bidx_next)s,
        %(phi)s, %(phi_key_id)s)
RETURNING id, provider_id, status, phi, phi_key_id, version, created_at, updated_at;

-- name: update_patient^
-- Replace a live patient's PHI and derived columns when its version matches and the actor
-- may see it (as get_patient, emergency grants included). Params: id, version, actor_id,
-- actor_is_admin, status, birth_year, mrn_bidx, email_bidx, last_name_bidx, their *_next,
-- phi, phi_key_id.
-- plan: generic
-- One primary-key probe finds the row whatever the values; the actor scope only filters it.
UPDATE patients
   SET status = %(status)s,
       birth_year = %(birth_year)s,
       mrn_bidx = %(mrn_bidx)s,
       email_bidx = %(email_bidx)s,
       last_name_bidx = %(last_name_bidx)s,
       mrn_bidx_next = %(mrn_bidx_next)s,
       email_bidx_next = %(email_bidx_next)s,
       last_name_bidx_next = %(last_name_bidx_next)s,
       phi = %(phi)s,
       phi_key_id = %(phi_key_id)s,
       version = version + 1
 WHERE id = %(id)s
   AND version = %(version)s
   AND deleted_at IS NULL
   AND (%(actor_is_admin)s OR provider_id = %(actor_id)s
        OR clarity_holds_emergency_grant(patients.id, %(actor_id)s))
RETURNING id, provider_id, status, phi, phi_key_id, version, created_at, updated_at;

-- name: delete_patient!
-- Soft-delete a live patient (kept for the audit trail) when its version matches and the
-- actor is an admin or its provider (an emergency grant does not allow deleting).
-- Params: id, version, actor_id, actor_is_admin.
-- plan: generic
-- One primary-key probe finds the row whatever the values; the actor scope only filters it.
UPDATE patients
   SET deleted_at = now(), version = version + 1
 WHERE id = %(id)s
   AND version = %(version)s
   AND deleted_at IS NULL
   AND (%(actor_is_admin)s OR provider_id = %(actor_id)s);

-- name: count_patients_not_under_key$
-- How many patients (deleted ones too) are enciphered under another key. Params: key_id.
SELECT count(*) FROM patients WHERE phi_key_id <> %(key_id)s;

-- name: list_patients_not_under_key
-- A batch of patients (deleted ones too) enciphered under another key, for rotation.
-- Params: key_id, after_id (null for the first batch), limit.
-- plan: custom
SELECT id, phi, phi_key_id, version
  FROM patients
 WHERE phi_key_id <> %(key_id)s
   AND (%(after_id)s::uuid IS NULL OR id > %(after_id)s::uuid)
 ORDER BY id
 LIMIT %(limit)s;

-- name: update_patient_envelopes
-- Store a batch of re-enciphered envelopes in one statement, each unless its patient changed
-- meanwhile (version and key id still as read); the content is unchanged, so the version
-- stays. Params: ids, versions, old_key_ids, envelopes, key_ids (one element per patient).
-- Returns: id of each envelope stored.
UPDATE patients p
   SET phi = v.phi, phi_key_id = v.phi_key_id
  FROM unnest(%(ids)s::uuid[], %(versions)s::integer[], %(old_key_ids)s::text[], %(envelopes)s::bytea[],
              %(key_ids)s::text[]) AS v (id, version, old_key_id, phi, phi_key_id)
 WHERE p.id = v.id AND p.version = v.version AND p.phi_key_id = v.old_key_id
RETURNING p.id;

-- name: count_patients_without_next_index$
-- How many patients (deleted ones too) still lack their next-key blind indexes.
SELECT count(*) FROM patients WHERE mrn_bidx_next IS NULL;

-- name: count_patients_with_next_index$
-- How many patients still hold next-key blind indexes (zero once a switch is complete).
SELECT count(*) FROM patients WHERE mrn_bidx_next IS NOT NULL;

-- name: list_patients_for_reindex
-- A batch of patients (deleted ones too) whose blind indexes are to be recomputed: all of
-- them, or only those lacking next-key indexes. Params: without_next_only, after_id (null
-- first), limit.
-- plan: custom
SELECT id, phi, phi_key_id, version
  FROM patients
 WHERE (NOT %(without_next_only)s OR mrn_bidx_next IS NULL)
   AND (%(after_id)s::uuid IS NULL OR id > %(after_id)s::uuid)
 ORDER BY id
 LIMIT %(limit)s;

-- name: update_patient_indexes
-- Store a batch of recomputed blind indexes in one statement, each unless its patient changed
-- meanwhile (its writer computed them). Params: ids, versions, and arrays of mrn_bidx,
-- email_bidx, last_name_bidx and their *_next (one element per patient). Returns: id of each stored.
UPDATE patients p
   SET mrn_bidx = v.mrn_bidx, email_bidx = v.email_bidx, last_name_bidx = v.last_name_bidx,
       mrn_bidx_next = v.mrn_bidx_next, email_bidx_next = v.email_bidx_next,
       last_name_bidx_next = v.last_name_bidx_next
  FROM unnest(%(ids)s::uuid[], %(versions)s::integer[], %(mrn_bidx)s::bytea[], %(email_bidx)s::bytea[],
              %(last_name_bidx)s::bytea[], %(mrn_bidx_next)s::bytea[], %(email_bidx_next)s::bytea[],
              %(last_name_bidx_next)s::bytea[])
       AS v (id, version, mrn_bidx, email_bidx, last_name_bidx, mrn_bidx_next, email_bidx_next, last_name_bidx_next)
 WHERE p.id = v.id AND p.version = v.version
RETURNING p.id;

-- name: get_patient_overview^
-- One live patient visible to the actor (as get_patient) with, in the same statement: the
-- latest reading of each kind (one index probe per kind), open alerts (newest reading first,
-- at most 50), the next scheduled appointment and the digital twin's current version.
-- Params: id, actor_id, actor_is_admin, kinds.
-- plan: generic
-- One primary-key probe finds the patient (the scope only filters it); the rest is keyed on it.
SELECT p.id, p.provider_id, p.status, p.phi, p.phi_key_id, p.version, p.created_at, p.updated_at,
       (SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.kind), '[]'::jsonb)
          FROM unnest(%(kinds)s::text[]) AS k (kind)
         CROSS JOIN LATERAL (
                SELECT b.kind, b.value, b.unit, b.recorded_at, b.source_device
                  FROM biometric_readings b
                 WHERE b.patient_id = p.id AND b.kind = k.kind
                 ORDER BY b.recorded_at DESC, b.source_device DESC
                 LIMIT 1) AS r) AS latest_readings,
       (SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.reading_recorded_at DESC, a.id DESC), '[]'::jsonb)
          FROM (SELECT al.id, al.kind, al.value, al.min_value, al.max_value, al.severity,
                       al.reading_recorded_at, al.source_device, al.version
                  FROM alerts al
                 WHERE al.patient_id = p.id AND al.status = 'open'
                 ORDER BY al.reading_recorded_at DESC, al.id DESC
                 LIMIT 50) AS a) AS open_alerts,
       (SELECT to_jsonb(n)
          FROM (SELECT ap.id, ap.provider_id, ap.starts_at, ap.ends_at, ap.version
                  FROM appointments ap
                 WHERE ap.patient_id = p.id AND ap.status = 'scheduled' AND ap.ends_at > now()
                 ORDER BY ap.starts_at, ap.id
                 LIMIT 1) AS n) AS next_appointment,
       (SELECT to_jsonb(t)
          FROM (SELECT tw.version, tw.config, tw.created_by, tw.created_at
                  FROM digital_twin_versions tw
                 WHERE tw.patient_id = p.id
                 ORDER BY tw.version DESC
                 LIMIT 1) AS t) AS digital_twin
  FROM patients p
 WHERE p.id = %(id)s
   AND p.deleted_at IS NULL
   AND (%(actor_is_admin)s OR p.provider_id = %(actor_id)s
        OR clarity_holds_emergency_grant(p.id, %(actor_id)s));
