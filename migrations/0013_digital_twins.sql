-- Digital twins: one configuration per patient, versioned. Every PUT appends a version and
-- keeps the old ones; the current configuration is the highest version. Versions are records:
-- the app may add and read them, never change them.
SET LOCAL lock_timeout = '5s';

CREATE TABLE digital_twin_versions (
    patient_id   uuid NOT NULL CONSTRAINT digital_twin_versions_patient_id_fkey REFERENCES patients (id),
    version      integer NOT NULL CONSTRAINT digital_twin_versions_version_check CHECK (version > 0),
    -- Versions are contiguous: version n > 1 requires version n - 1 of the same patient.
    -- With the primary key this makes "insert expected + 1" a compare-and-set: of concurrent
    -- writers of one version exactly one succeeds, and nobody can skip ahead.
    prev_version integer GENERATED ALWAYS AS (nullif(version - 1, 0)) STORED,
    config       jsonb NOT NULL
                 CONSTRAINT digital_twin_versions_config_check
                 CHECK (jsonb_typeof(config) = 'object' AND octet_length(config::text) <= 65536),
    created_by   uuid NOT NULL CONSTRAINT digital_twin_versions_created_by_fkey REFERENCES users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Also the index for the current version (max) and for the versions list, newest first.
    CONSTRAINT digital_twin_versions_pkey PRIMARY KEY (patient_id, version),
    CONSTRAINT digital_twin_versions_prev_version_fkey FOREIGN KEY (patient_id, prev_version)
        REFERENCES digital_twin_versions (patient_id, version)
);

-- Append-only, even for the table's owner (as audit_events and medical_records).
CREATE FUNCTION digital_twin_versions_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'digital twin versions are append-only: % refused (write a new version)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER digital_twin_versions_append_only BEFORE UPDATE OR DELETE ON digital_twin_versions
    FOR EACH ROW EXECUTE FUNCTION digital_twin_versions_refuse_change();
CREATE TRIGGER digital_twin_versions_no_truncate BEFORE TRUNCATE ON digital_twin_versions
    FOR EACH STATEMENT EXECUTE FUNCTION digital_twin_versions_refuse_change();

GRANT SELECT, INSERT ON digital_twin_versions TO clarity_app;

-- Row-level security: visible when the patient is (the patients policies decide); a new
-- version must be written by the transaction's actor.
ALTER TABLE digital_twin_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE digital_twin_versions FORCE ROW LEVEL SECURITY;

CREATE POLICY digital_twin_versions_select ON digital_twin_versions FOR SELECT
    USING (EXISTS (SELECT 1 FROM patients p WHERE p.id = digital_twin_versions.patient_id));

CREATE POLICY digital_twin_versions_insert ON digital_twin_versions FOR INSERT
    WITH CHECK (created_by = clarity_actor_id()
                AND EXISTS (SELECT 1 FROM patients p WHERE p.id = digital_twin_versions.patient_id));
