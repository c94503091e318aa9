-- Cheaper writes to biometric_readings, every guarantee kept (bench/ingest.py measures them).
--
-- 1. One index instead of two. The unique key becomes (patient_id, kind, recorded_at,
--    source_device): the same dedupe (same column set), and it now also serves one kind's
--    range scans and the latest per kind, which the index it replaces
--    (patient_id, kind, recorded_at) served. Queries over all kinds probe it once per kind
--    (sql/biometrics.sql). Each reading fed two indexes before, now one.
-- 2. The patient's existence is checked once per statement, not once per row. The foreign key
--    to patients ran a lookup and a FOR KEY SHARE lock for every reading of a batch, though
--    all of them name the same patient. Now each patient with readings has one row in
--    biometric_patients, which keeps the real foreign key to patients; statement-level
--    triggers with a transition table add the distinct patients of each INSERT or UPDATE of
--    readings there (ON CONFLICT DO NOTHING: once per patient, ever). So:
--    - a reading never names a missing patient: its patient's biometric_patients row is
--      inserted in the same statement, and that insert's foreign key check fails for a
--      missing patient (or, as with the old key, waits for and then fails against a
--      concurrent delete);
--    - a patient with readings is never hard-deleted, by the owner either: the foreign key
--      from biometric_patients refuses it (PostgreSQL's own check, with its handling of
--      concurrent deletes at every isolation level and without row-level security in the
--      way), and biometric_patients rows are never deleted, updated or truncated (a trigger
--      refuses it, even for the owner). A patient whose readings were all removed by the
--      owner still cannot be deleted: stricter than the foreign key, never looser.
--    Statement-level triggers fire for the table a statement names, so every partition gets
--    them too (clarity_create_biometric_partitions, below), for the owner's direct writes.
-- Unchanged: the CHECK constraints, the monthly partitions, row-level security (its policy is
-- already one primary-key probe of patients per row; no cheaper equivalent was found) and the
-- alerts. The new unique index is built in this transaction (SHARE locks on each partition:
-- ingestion waits for the build).
SET LOCAL lock_timeout = '5s';

-- The patients that have readings: one row each, with the foreign key the readings had.
CREATE TABLE biometric_patients (
    patient_id uuid CONSTRAINT biometric_patients_pkey PRIMARY KEY
               CONSTRAINT biometric_patients_patient_id_fkey REFERENCES patients (id)
);

-- Permanent, even for the owner: deleting a row would free its patient for deletion.
CREATE FUNCTION biometric_patients_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'biometric_patients rows are permanent: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER biometric_patients_permanent BEFORE UPDATE OR DELETE ON biometric_patients
    FOR EACH ROW EXECUTE FUNCTION biometric_patients_refuse_change();
CREATE TRIGGER biometric_patients_no_truncate BEFORE TRUNCATE ON biometric_patients
    FOR EACH STATEMENT EXECUTE FUNCTION biometric_patients_refuse_change();

-- Visible, and added, exactly when the patient is (as biometric_readings). The app role only
-- adds rows, through the triggers below (which run as the inserting role).
ALTER TABLE biometric_patients ENABLE ROW LEVEL SECURITY;
ALTER TABLE biometric_patients FORCE ROW LEVEL SECURITY;
CREATE POLICY biometric_patients_patient_visible ON biometric_patients
    USING (EXISTS (SELECT 1 FROM patients p WHERE p.id = biometric_patients.patient_id))
    WITH CHECK (EXISTS (SELECT 1 FROM patients p WHERE p.id = biometric_patients.patient_id));
GRANT INSERT ON biometric_patients TO clarity_app;

-- Every patient with readings so far, whoever runs this: as an admin's transaction, which the
-- policies let see every patient and reading (FORCE applies them to the owner too).
DO $$
BEGIN
    PERFORM set_config('clarity.actor_role', 'admin', true);
    INSERT INTO biometric_patients (patient_id)
    SELECT DISTINCT patient_id FROM biometric_readings;
    PERFORM set_config('clarity.actor_role', '', true);
END
$$;

-- The distinct patients of a statement's new or updated readings (its transition table
-- new_readings), added to biometric_patients unless already there. Their foreign key checks
-- each new patient once (and locks it FOR KEY SHARE until commit, as the old key did).
CREATE FUNCTION clarity_biometric_patients_add() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO biometric_patients (patient_id)
    SELECT DISTINCT patient_id FROM new_readings
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER biometric_readings_patients_insert AFTER INSERT ON biometric_readings
    REFERENCING NEW TABLE AS new_readings
    FOR EACH STATEMENT EXECUTE FUNCTION clarity_biometric_patients_add();
CREATE TRIGGER biometric_readings_patients_update AFTER UPDATE ON biometric_readings
    REFERENCING NEW TABLE AS new_readings
    FOR EACH STATEMENT EXECUTE FUNCTION clarity_biometric_patients_add();

-- The same triggers on each partition, for statements that name a partition (only the owner
-- can: the app role has no privilege on partitions). A statement on the parent fires the
-- parent's alone. CREATE OR REPLACE: safe to call again for the same partition.
CREATE FUNCTION clarity_add_biometric_partition_triggers(partition regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE OR REPLACE TRIGGER biometric_readings_patients_insert AFTER INSERT ON %s '
                   'REFERENCING NEW TABLE AS new_readings '
                   'FOR EACH STATEMENT EXECUTE FUNCTION clarity_biometric_patients_add()', partition);
    EXECUTE format('CREATE OR REPLACE TRIGGER biometric_readings_patients_update AFTER UPDATE ON %s '
                   'REFERENCING NEW TABLE AS new_readings '
                   'FOR EACH STATEMENT EXECUTE FUNCTION clarity_biometric_patients_add()', partition);
END
$$;
REVOKE EXECUTE ON FUNCTION clarity_add_biometric_partition_triggers(regclass) FROM PUBLIC;
DO $$
DECLARE
    partition regclass;
BEGIN
    FOR partition IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'biometric_readings'::regclass LOOP
        PERFORM clarity_add_biometric_partition_triggers(partition);
    END LOOP;
END
$$;

-- 0010's function, plus the triggers for each partition it creates.
CREATE OR REPLACE FUNCTION clarity_create_biometric_partitions(months_back integer, months_ahead integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    -- Month arithmetic on UTC wall-clock times: timestamptz + '1 month' would follow the
    -- session's time zone (and its DST changes).
    first_month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => months_back);
    month_start timestamp;
    partition_name text;
    created integer := 0;
BEGIN
    IF months_back < 0 OR months_ahead < 0 THEN
        RAISE EXCEPTION 'months_back and months_ahead must be >= 0' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 0 .. months_back + months_ahead LOOP
        month_start := first_month + make_interval(months => i);
        partition_name := 'biometric_readings_' || to_char(month_start, 'YYYY_MM');
        IF to_regclass(quote_ident(partition_name)) IS NULL THEN
            EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF biometric_readings FOR VALUES FROM (%L) TO (%L)',
                           partition_name, month_start AT TIME ZONE 'UTC',
                           (month_start + interval '1 month') AT TIME ZONE 'UTC');
            PERFORM clarity_add_biometric_partition_triggers(quote_ident(partition_name)::regclass);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

-- The foreign key's work is now biometric_patients'.
ALTER TABLE biometric_readings DROP CONSTRAINT biometric_readings_patient_id_fkey;

-- One index: the unique key, kind before recorded_at.
DROP INDEX biometric_readings_patient_id_kind_recorded_at_idx;
ALTER TABLE biometric_readings DROP CONSTRAINT biometric_readings_reading_key;
ALTER TABLE biometric_readings ADD CONSTRAINT biometric_readings_reading_key
    UNIQUE (patient_id, kind, recorded_at, source_device);
