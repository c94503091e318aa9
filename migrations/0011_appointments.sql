-- Appointments: a patient seen by a provider over [starts_at, ends_at). A provider is never
-- double-booked: an exclusion constraint over (provider, time range) of the live (not
-- cancelled) appointments decides, so concurrent bookings of one slot cannot both commit.
SET LOCAL lock_timeout = '5s';

-- btree_gist lets the GiST exclusion constraint compare provider_id (a uuid) with "=".
-- It is a trusted extension: the schema owner needs CREATE on the database (or a superuser
-- installs it beforehand, and this is a no-op). The rollback leaves it installed: see there.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE appointments (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    patient_id   uuid NOT NULL CONSTRAINT appointments_patient_id_fkey REFERENCES patients (id),
    -- The provider seeing the patient (by default the patient's own provider).
    provider_id  uuid NOT NULL CONSTRAINT appointments_provider_id_fkey REFERENCES users (id),
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    status       text NOT NULL DEFAULT 'scheduled'
                 CONSTRAINT appointments_status_check CHECK (status IN ('scheduled', 'cancelled', 'completed')),
    cancelled_at timestamptz,
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    created_by   uuid NOT NULL CONSTRAINT appointments_created_by_fkey REFERENCES users (id),
    -- At most 8 hours: the schedule queries rely on it to bound their index range scans.
    CONSTRAINT appointments_ends_at_check
        CHECK (ends_at > starts_at AND ends_at - starts_at <= interval '8 hours'),
    CONSTRAINT appointments_cancelled_at_check
        CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL)),
    -- '[)' ranges: back-to-back appointments (one ends at 10:00, the next starts at 10:00) fit.
    CONSTRAINT appointments_provider_id_starts_at_excl
        EXCLUDE USING gist (provider_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&)
        WHERE (status <> 'cancelled')
);
-- A patient's appointments by time; a provider's schedule by time; every provider's (admins).
CREATE INDEX appointments_patient_id_starts_at_id_idx ON appointments (patient_id, starts_at, id);
CREATE INDEX appointments_provider_id_starts_at_id_idx ON appointments (provider_id, starts_at, id);
CREATE INDEX appointments_starts_at_id_idx ON appointments (starts_at, id);
CREATE TRIGGER appointments_touch_updated_at BEFORE UPDATE ON appointments
    FOR EACH ROW EXECUTE FUNCTION clarity_touch_updated_at();

-- Who sees the patient and when may change (reschedule, cancel, complete); whose appointment
-- it is, with whom and who booked it may not. No DELETE: a cancelled appointment is kept.
GRANT SELECT, INSERT ON appointments TO clarity_app;
GRANT UPDATE (starts_at, ends_at, status, cancelled_at, version) ON appointments TO clarity_app;

-- Row-level security: an appointment is visible where its patient is (the patients table's
-- own policies decide: admins all, providers their patients and active emergency grants),
-- and to the provider who sees the patient, whose schedule it is even when the patient is not
-- theirs (an admin booked them for a colleague's patient, or an emergency grant expired).
ALTER TABLE appointments ENABLE ROW LEVEL SECURITY;
ALTER TABLE appointments FORCE ROW LEVEL SECURITY;

CREATE POLICY appointments_select ON appointments FOR SELECT
    USING ((clarity_actor_role() = 'provider' AND provider_id = clarity_actor_id())
           OR EXISTS (SELECT 1 FROM patients p WHERE p.id = appointments.patient_id));

-- Booking needs the patient visible; a provider books only themself; the booker is the actor.
CREATE POLICY appointments_insert ON appointments FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM patients p WHERE p.id = appointments.patient_id)
                AND (clarity_actor_role() = 'admin' OR provider_id = clarity_actor_id())
                AND created_by = clarity_actor_id());

CREATE POLICY appointments_update ON appointments FOR UPDATE
    USING ((clarity_actor_role() = 'provider' AND provider_id = clarity_actor_id())
           OR EXISTS (SELECT 1 FROM patients p WHERE p.id = appointments.patient_id))
    WITH CHECK ((clarity_actor_role() = 'provider' AND provider_id = clarity_actor_id())
                OR EXISTS (SELECT 1 FROM patients p WHERE p.id = appointments.patient_id));
