-- The reads of a patient's FHIR export (clarity/services/export.py). Each runs through a
-- server-side cursor (Query.stream) inside one READ ONLY, REPEATABLE READ transaction carrying
-- the actor's context, so every row comes from one snapshot and row-level security applies.
-- The caller reads the patient first (sql/patients.sql get_patient, scoped to the actor) and
-- reads nothing else when it is not visible. Each has a fixed order, so an export is the
-- same bytes every time the data is.

-- name: list_export_biometric_readings
-- Every reading of a patient, oldest first: the unique key (patient_id, recorded_at, kind,
-- source_device) gives the order, one index range per monthly partition merged, so rows
-- stream from the first fetch without a sort of the patient's history. Params: patient_id.
-- Returns: kind, value, unit, recorded_at, source_device, received_at.
SELECT kind, value, unit, recorded_at, source_device, received_at
  FROM biometric_readings
 WHERE patient_id = %(patient_id)s
 ORDER BY recorded_at, kind, source_device;

-- name: list_export_medical_records
-- The current version of each of a patient's records of one type (the version no record
-- amends), with its chain's original (root_id: the id the export gives the record, the same
-- however often it is amended) and how many versions the chain has (1: never amended), by
-- clinical time. Amendments keep the patient and type of what they amend (the foreign key
-- medical_records_amends_id_fkey), and chains cannot loop (append-only, amends_id <> id).
-- Params: patient_id, type.
-- Returns: root_id, versions, id, type, body, body_key_id, author_id, recorded_at, created_at.
WITH RECURSIVE chain (id, root_id, versions) AS (
    SELECT id, id, 1
      FROM medical_records
     WHERE patient_id = %(patient_id)s AND type = %(type)s AND amends_id IS NULL
    UNION ALL
    SELECT r.id, c.root_id, c.versions + 1
      FROM chain c
      JOIN medical_records r ON r.amends_id = c.id
)
SELECT c.root_id, c.versions, r.id, r.type, r.body, r.body_key_id, r.author_id, r.recorded_at, r.created_at
  FROM chain c
  JOIN medical_records r ON r.id = c.id
 WHERE NOT EXISTS (SELECT 1 FROM medical_records s WHERE s.amends_id = r.id)
 ORDER BY r.recorded_at, c.root_id;

-- name: list_export_appointments
-- Every appointment of a patient, by start time. Params: patient_id.
SELECT id, patient_id, provider_id, starts_at, ends_at, status, cancelled_at, version,
       created_at, updated_at, created_by
  FROM appointments
 WHERE patient_id = %(patient_id)s
 ORDER BY starts_at, id;

-- name: list_export_alerts
-- Every alert of a patient, by the time of the reading that raised it. Params: patient_id.
SELECT id, patient_id, kind, value, reading_recorded_at, source_device, min_value, max_value,
       rule_scope, severity, status, acknowledged_by, acknowledged_at, resolved_by, resolved_at,
       version, created_at, updated_at
  FROM alerts
 WHERE patient_id = %(patient_id)s
 ORDER BY reading_recorded_at, id;

-- name: list_export_patient_ids
-- The live patients a bulk export covers: all, or one provider's (provider_id null: all),
-- in creation order. Params: provider_id.
-- A generic plan cannot tell all patients from one provider's:
-- plan: custom
SELECT id
  FROM patients
 WHERE deleted_at IS NULL
   AND (%(provider_id)s::uuid IS NULL OR provider_id = %(provider_id)s::uuid)
 ORDER BY created_at, id;

-- name: list_export_documents
-- A patient's live documents (their metadata; the content stays behind its own route), in
-- upload order. Params: patient_id.
SELECT id, patient_id, meta, key_id, content_type, size_bytes, author_id, created_at, version
  FROM documents
 WHERE patient_id = %(patient_id)s AND deleted_at IS NULL
 ORDER BY created_at, id;
