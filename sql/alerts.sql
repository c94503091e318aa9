-- name: list_alert_rules
-- A patient's effective rule per kind: their override, else the global default (the same
-- choice as sql/biometrics.sql insert_biometric_readings makes when raising alerts), with the
-- global default beside an override. Kinds with neither are absent. Scope the patient first.
-- Params: patient_id. Returns: kind, override, id, min_value, max_value, severity, version,
-- updated_at, default_min_value, default_max_value, default_severity.
WITH candidates AS (
    SELECT id, patient_id, kind, min_value, max_value, severity, version, updated_at
      FROM alert_rules
     WHERE patient_id = %(patient_id)s::uuid OR patient_id IS NULL
), effective AS (
    SELECT DISTINCT ON (kind) id, patient_id, kind, min_value, max_value, severity, version, updated_at
      FROM candidates
     ORDER BY kind, patient_id NULLS LAST
)
SELECT e.kind, e.patient_id IS NOT NULL AS override, e.id, e.min_value, e.max_value, e.severity,
       e.version, e.updated_at, d.min_value AS default_min_value, d.max_value AS default_max_value,
       d.severity AS default_severity
  FROM effective e
  LEFT JOIN candidates d ON d.kind = e.kind AND d.patient_id IS NULL AND e.patient_id IS NOT NULL
 ORDER BY e.kind;

-- name: list_global_alert_rules
-- The global default rules, by kind.
SELECT id, patient_id, kind, min_value, max_value, severity, version, created_by, updated_by,
       created_at, updated_at
  FROM alert_rules
 WHERE patient_id IS NULL
 ORDER BY kind;

-- name: get_alert_rule^
-- A patient's override for a kind, or the global default when patient_id is null.
-- Params: patient_id, kind.
-- plan: generic
-- Each arm has its partial unique index: the generic plan ORs two one-row probes.
SELECT id, patient_id, kind, min_value, max_value, severity, version, created_by, updated_by,
       created_at, updated_at
  FROM alert_rules
 WHERE kind = %(kind)s::text
   AND ((%(patient_id)s::uuid IS NULL AND patient_id IS NULL) OR patient_id = %(patient_id)s::uuid);

-- name: insert_alert_rule^
-- Create a patient's override (or a global default: patient_id null); no row when one exists
-- already (created meanwhile). Params: patient_id, kind, min_value, max_value, severity, actor_id.
INSERT INTO alert_rules (patient_id, kind, min_value, max_value, severity, created_by, updated_by)
VALUES (%(patient_id)s::uuid, %(kind)s, %(min_value)s::double precision, %(max_value)s::double precision,
        %(severity)s, %(actor_id)s::uuid, %(actor_id)s::uuid)
ON CONFLICT DO NOTHING
RETURNING id, patient_id, kind, min_value, max_value, severity, version, created_by, updated_by,
          created_at, updated_at;

-- name: update_alert_rule^
-- Replace a rule's bounds and severity when its version matches; no row otherwise.
-- Params: id, version, min_value, max_value, severity, actor_id.
UPDATE alert_rules
   SET min_value = %(min_value)s::double precision,
       max_value = %(max_value)s::double precision,
       severity = %(severity)s,
       updated_by = %(actor_id)s::uuid,
       version = version + 1
 WHERE id = %(id)s::uuid AND version = %(version)s
RETURNING id, patient_id, kind, min_value, max_value, severity, version, created_by, updated_by,
          created_at, updated_at;

-- name: delete_alert_rule!
-- Delete a patient's override when its version matches (the global default applies again).
-- Params: id, version.
DELETE FROM alert_rules
 WHERE id = %(id)s::uuid AND version = %(version)s AND patient_id IS NOT NULL;

-- name: list_patient_alerts
-- A patient's alerts, newest reading first, after a keyset cursor over (reading_recorded_at,
-- id), optionally of one status (null = all). Scope the patient first.
-- Params: patient_id, status, after_recorded_at, after_id, limit.
-- plan: custom
SELECT id, patient_id, kind, value, reading_recorded_at, source_device, min_value, max_value,
       rule_scope, severity, status, acknowledged_by, acknowledged_at, resolved_by, resolved_at,
       version, created_at, updated_at
  FROM alerts
 WHERE patient_id = %(patient_id)s::uuid
   AND (%(status)s::text IS NULL OR status = %(status)s::text)
   AND (%(after_recorded_at)s::timestamptz IS NULL
        OR (reading_recorded_at, id) < (%(after_recorded_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY reading_recorded_at DESC, id DESC
 LIMIT %(limit)s;

-- name: list_alerts
-- Alerts of every live patient the actor may see (the predicate of sql/patients.sql
-- get_patient_access: an admin all, a provider their own and those under an active emergency
-- grant), newest reading first, after a keyset cursor over (reading_recorded_at, id),
-- optionally of one status (null = all), each with its patient's provider (the caller audits
-- an alert only a grant opens as an emergency access without looking the patient up again).
-- Params: actor_id, actor_is_admin, status, after_recorded_at, after_id, limit.
-- Returns: the alert's columns and patient_provider_id.
-- A generic plan cannot tell a provider's scope from an admin's: custom plans.
-- plan: custom
SELECT a.id, a.patient_id, a.kind, a.value, a.reading_recorded_at, a.source_device, a.min_value,
       a.max_value, a.rule_scope, a.severity, a.status, a.acknowledged_by, a.acknowledged_at,
       a.resolved_by, a.resolved_at, a.version, a.created_at, a.updated_at,
       p.provider_id AS patient_provider_id
  FROM alerts a
  JOIN patients p ON p.id = a.patient_id
 WHERE p.deleted_at IS NULL
   AND (%(actor_is_admin)s OR p.provider_id = %(actor_id)s
        OR clarity_holds_emergency_grant(p.id, %(actor_id)s))
   AND (%(status)s::text IS NULL OR a.status = %(status)s::text)
   AND (%(after_recorded_at)s::timestamptz IS NULL
        OR (a.reading_recorded_at, a.id) < (%(after_recorded_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY a.reading_recorded_at DESC, a.id DESC
 LIMIT %(limit)s;

-- name: get_alert^
-- One alert of a live patient the actor may see, with its patient's provider (as list_alerts).
-- Params: id, actor_id, actor_is_admin. Returns: the alert's columns and patient_provider_id.
-- plan: generic
-- One primary-key probe finds the row whatever the values; the actor scope only filters it.
SELECT a.id, a.patient_id, a.kind, a.value, a.reading_recorded_at, a.source_device, a.min_value,
       a.max_value, a.rule_scope, a.severity, a.status, a.acknowledged_by, a.acknowledged_at,
       a.resolved_by, a.resolved_at, a.version, a.created_at, a.updated_at,
       p.provider_id AS patient_provider_id
  FROM alerts a
  JOIN patients p ON p.id = a.patient_id
 WHERE a.id = %(id)s::uuid
   AND p.deleted_at IS NULL
   AND (%(actor_is_admin)s OR p.provider_id = %(actor_id)s
        OR clarity_holds_emergency_grant(p.id, %(actor_id)s));

-- name: update_alert_status^
-- Move an alert to 'acknowledged' or 'resolved' when its version matches, recording who and
-- when; no row otherwise. The caller checks the transition is allowed (at this version).
-- Params: id, version, status, actor_id.
UPDATE alerts
   SET status = %(status)s::text,
       acknowledged_by = CASE WHEN %(status)s::text = 'acknowledged' THEN %(actor_id)s::uuid ELSE acknowledged_by END,
       acknowledged_at = CASE WHEN %(status)s::text = 'acknowledged' THEN now() ELSE acknowledged_at END,
       resolved_by = CASE WHEN %(status)s::text = 'resolved' THEN %(actor_id)s::uuid ELSE resolved_by END,
       resolved_at = CASE WHEN %(status)s::text = 'resolved' THEN now() ELSE resolved_at END,
       version = version + 1
 WHERE id = %(id)s::uuid AND version = %(version)s
RETURNING id, patient_id, kind, value, reading_recorded_at, source_device, min_value, max_value,
          rule_scope, severity, status, acknowledged_by, acknowledged_at, resolved_by, resolved_at,
          version, created_at, updated_at;
