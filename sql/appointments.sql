-- name: insert_appointment^
-- Book an appointment unless it overlaps a live (not cancelled) appointment of the same
-- provider: the exclusion constraint appointments_provider_id_starts_at_excl is the arbiter,
-- so of concurrent bookings of one slot exactly one commits and the others get no row (no
-- error, no deadlock between the waiters). Params: patient_id, provider_id, starts_at,
-- ends_at, created_by.
INSERT INTO appointments (patient_id, provider_id, starts_at, ends_at, created_by)
VALUES (%(patient_id)s, %(provider_id)s, %(starts_at)s, %(ends_at)s, %(created_by)s)
ON CONFLICT DO NOTHING
RETURNING id, patient_id, provider_id, starts_at, ends_at, status, cancelled_at, version,
          created_at, updated_at, created_by;

-- name: get_appointment^
-- One appointment visible to the actor: an admin sees all; a provider those they see the
-- patient in, and those of their live patients or of a patient they hold an active
-- emergency-access grant for. With the patient's provider (the caller tells an access only a
-- grant allows without looking the patient up again); null when the patient is hidden from
-- the actor (row-level security), who then reaches the appointment as the provider in it.
-- Params: id, actor_id, actor_is_admin.
-- Returns: the appointment's columns and patient_provider_id.
-- plan: generic
-- One primary-key probe finds the row whatever the values; the actor scope only filters it.
SELECT a.id, a.patient_id, a.provider_id, a.starts_at, a.ends_at, a.status, a.cancelled_at,
       a.version, a.created_at, a.updated_at, a.created_by, p.provider_id AS patient_provider_id
  FROM appointments a
  LEFT JOIN patients p ON p.id = a.patient_id
 WHERE a.id = %(id)s
   AND (%(actor_is_admin)s OR a.provider_id = %(actor_id)s
        OR (p.id IS NOT NULL AND p.deleted_at IS NULL
            AND (p.provider_id = %(actor_id)s OR clarity_holds_emergency_grant(p.id, %(actor_id)s))));

-- name: list_appointments_for_patient
-- A patient's appointments (the caller checked the actor may see the patient) overlapping
-- an optional [window_start, window_end), with an optional status, by start time after a
-- keyset cursor. Appointments last at most 8 hours (appointments_ends_at_check), which
-- bounds the index range. Params: patient_id, window_start, window_end, status,
-- after_starts_at, after_id, limit (nulls: no filter).
-- plan: custom
SELECT id, patient_id, provider_id, starts_at, ends_at, status, cancelled_at, version,
       created_at, updated_at, created_by
  FROM appointments
 WHERE patient_id = %(patient_id)s
   AND (%(window_end)s::timestamptz IS NULL OR starts_at < %(window_end)s::timestamptz)
   AND (%(window_start)s::timestamptz IS NULL
        OR (starts_at >= %(window_start)s::timestamptz - interval '8 hours'
            AND ends_at > %(window_start)s::timestamptz))
   AND (%(status)s::text IS NULL OR status = %(status)s::text)
   AND (%(after_starts_at)s::timestamptz IS NULL
        OR (starts_at, id) > (%(after_starts_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY starts_at, id
 LIMIT %(limit)s;

-- name: list_schedule_appointments
-- The actor's schedule: the appointments in which a provider sees patients (an admin:
-- everyone's, optionally one provider's) overlapping [window_start, window_end), with an
-- optional status, by start time after a keyset cursor. Params: actor_id, actor_is_admin,
-- provider_id, window_start, window_end, status, after_starts_at, after_id, limit.
-- plan: custom
SELECT id, patient_id, provider_id, starts_at, ends_at, status, cancelled_at, version,
       created_at, updated_at, created_by
  FROM appointments
 WHERE (%(actor_is_admin)s OR provider_id = %(actor_id)s)
   AND (%(provider_id)s::uuid IS NULL OR provider_id = %(provider_id)s::uuid)
   AND starts_at >= %(window_start)s::timestamptz - interval '8 hours'
   AND starts_at < %(window_end)s::timestamptz
   AND ends_at > %(window_start)s::timestamptz
   AND (%(status)s::text IS NULL OR status = %(status)s::text)
   AND (%(after_starts_at)s::timestamptz IS NULL
        OR (starts_at, id) > (%(after_starts_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY starts_at, id
 LIMIT %(limit)s;

-- name: update_appointment_times^
-- Reschedule a scheduled appointment the actor may see (as get_appointment) when its version
-- matches; no row when it does not. Overlapping another live appointment of the provider
-- raises the exclusion violation. Params: id, version, actor_id, actor_is_admin, starts_at,
-- ends_at.
-- plan: generic
-- One primary-key probe finds the row whatever the values; the actor scope only filters it.
UPDATE appointments a
   SET starts_at = %(starts_at)s, ends_at = %(ends_at)s, version = a.version + 1
 WHERE a.id = %(id)s
   AND a.version = %(version)s
   AND a.status = 'scheduled'
   AND (%(actor_is_admin)s OR a.provider_id = %(actor_id)s
        OR EXISTS (SELECT 1 FROM patients p
                    WHERE p.id = a.patient_id AND p.deleted_at IS NULL
                      AND (p.provider_id = %(actor_id)s
                           OR clarity_holds_emergency_grant(p.id, %(actor_id)s))))
RETURNING a.id, a.patient_id, a.provider_id, a.starts_at, a.ends_at, a.status, a.cancelled_at,
          a.version, a.created_at, a.updated_at, a.created_by;

-- name: update_appointment_status^
-- Cancel or complete a scheduled appointment the actor may see (as get_appointment) when its
-- version matches; no row when it does not. A cancelled one frees its slot.
-- Params: id, version, actor_id, actor_is_admin, status.
-- plan: generic
-- One primary-key probe finds the row whatever the values; the actor scope only filters it.
UPDATE appointments a
   SET status = %(status)s::text,
       cancelled_at = CASE WHEN %(status)s::text = 'cancelled' THEN now() END,
       version = a.version + 1
 WHERE a.id = %(id)s
   AND a.version = %(version)s
   AND a.status = 'scheduled'
   AND (%(actor_is_admin)s OR a.provider_id = %(actor_id)s
        OR EXISTS (SELECT 1 FROM patients p
                    WHERE p.id = a.patient_id AND p.deleted_at IS NULL
                      AND (p.provider_id = %(actor_id)s
                           OR clarity_holds_emergency_grant(p.id, %(actor_id)s))))
RETURNING a.id, a.patient_id, a.provider_id, a.starts_at, a.ends_at, a.status, a.cancelled_at,
          a.version, a.created_at, a.updated_at, a.created_by;

-- name: update_appointments_cancelled_for_patient!
-- Cancel a patient's scheduled appointments that have not started (when the patient is
-- deleted), freeing their providers' slots. Params: patient_id.
UPDATE appointments
   SET status = 'cancelled', cancelled_at = now(), version = version + 1
 WHERE patient_id = %(patient_id)s
   AND status = 'scheduled'
   AND starts_at > now();
