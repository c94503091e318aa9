-- name: get_digital_twin_version^
-- A patient's current digital-twin configuration (the highest version), or none. The caller
-- has checked that the actor sees the patient (row-level security backs it up).
-- Params: patient_id. Returns: patient_id, version, config, created_by, created_at.
SELECT patient_id, version, config, created_by, created_at
  FROM digital_twin_versions
 WHERE patient_id = %(patient_id)s
 ORDER BY version DESC
 LIMIT 1;

-- name: list_digital_twin_versions
-- A patient's digital-twin versions, newest first, below a keyset cursor (null: from the
-- newest). Params: patient_id, before_version, limit.
-- plan: custom
SELECT patient_id, version, config, created_by, created_at
  FROM digital_twin_versions
 WHERE patient_id = %(patient_id)s
   AND (%(before_version)s::integer IS NULL OR version < %(before_version)s::integer)
 ORDER BY version DESC
 LIMIT %(limit)s;

-- name: insert_digital_twin_version^
-- Append a version. The caller passes the version it read plus one (1 for the first): the
-- primary key refuses a version someone else wrote meanwhile, and the prev_version foreign
-- key one that skips ahead, so concurrent writers never both succeed nor lose a write.
-- Params: patient_id, version, config (jsonb), created_by.
INSERT INTO digital_twin_versions (patient_id, version, config, created_by)
VALUES (%(patient_id)s, %(version)s, %(config)s, %(created_by)s)
RETURNING patient_id, version, config, created_by, created_at;
