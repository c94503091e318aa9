-- name: get_patient^
-- One live patient visible to the actor. Params: id, actor_id, actor_is_admin.
SELECT id, provider_id, status, phi, phi_key_id, version, created_at, updated_at
  FROM patients
 WHERE id = %(id)s
   AND deleted_at IS NULL
   AND (%(actor_is_admin)s OR provider_id = %(actor_id)s);

-- name: list_patients
-- Live patients visible to the actor, in creation order after a keyset cursor, with optional
-- filters (null = no filter): status, birth-year range, and blind indexes of MRN, email and
-- last name. Params: actor_id, actor_is_admin, status, birth_year_from, birth_year_to,
-- mrn_bidx, email_bidx, last_name_bidx, after_created_at, after_id, limit.
SELECT id, provider_id, status, phi, phi_key_id, version, created_at, updated_at
  FROM patients
 WHERE deleted_at IS NULL
   AND (%(actor_is_admin)s OR provider_id = %(actor_id)s)
   AND (%(status)s::text IS NULL OR status = %(status)s::text)
   AND (%(birth_year_from)s::smallint IS NULL OR birth_year >= %(birth_year_from)s::smallint)
   AND (%(birth_year_to)s::smallint IS NULL OR birth_year <= %(birth_year_to)s::smallint)
   AND (%(mrn_bidx)s::bytea IS NULL OR mrn_bidx = %(mrn_bidx)s::bytea)
   AND (%(email_bidx)s::bytea IS NULL OR email_bidx = %(email_bidx)s::bytea)
   AND (%(last_name_bidx)s::bytea IS NULL OR last_name_bidx = %(last_name_bidx)s::bytea)
   AND (%(after_created_at)s::timestamptz IS NULL
        OR (created_at, id) > (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY created_at, id
 LIMIT %(limit)s;

-- name: insert_patient^
-- Create a patient. Params: id, provider_id, status, birth_year, mrn_bidx, email_bidx,
-- last_name_bidx, phi, phi_key_id.
INSERT INTO patients (id, provider_id, status, birth_year, mrn_bidx, email_bidx, last_name_bidx,
                      phi, phi_key_id)
VALUES (%(id)s, %(provider_id)s, %(status)s, %(birth_year)s, %(mrn_bidx)s, %(email_bidx)s,
        %(last_name_bidx)s, %(phi)s, %(phi_key_id)s)
RETURNING id, provider_id, status, phi, phi_key_id, version, created_at, updated_at;

-- name: update_patient^
-- Replace a live patient's PHI and derived columns when its version matches and the actor
-- may see it. Params: id, version, actor_id, actor_is_admin, status, birth_year, mrn_bidx,
-- email_bidx, last_name_bidx, phi, phi_key_id.
UPDATE patients
   SET status = %(status)s,
       birth_year = %(birth_year)s,
       mrn_bidx = %(mrn_bidx)s,
       email_bidx = %(email_bidx)s,
       last_name_bidx = %(last_name_bidx)s,
       phi = %(phi)s,
       phi_key_id = %(phi_key_id)s,
       version = version + 1
 WHERE id = %(id)s
   AND version = %(version)s
   AND deleted_at IS NULL
   AND (%(actor_is_admin)s OR provider_id = %(actor_id)s)
RETURNING id, provider_id, status, phi, phi_key_id, version, created_at, updated_at;

-- name: delete_patient!
-- Soft-delete a live patient (kept for the audit trail) when its version matches and the
-- actor may see it. Params: id, version, actor_id, actor_is_admin.
UPDATE patients
   SET deleted_at = now(), version = version + 1
 WHERE id = %(id)s
   AND version = %(version)s
   AND deleted_at IS NULL
   AND (%(actor_is_admin)s OR provider_id = %(actor_id)s);
