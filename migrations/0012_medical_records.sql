-- Medical records: notes, diagnoses, prescriptions and lab results. The body (JSON, shape per
-- type) is an AES-256-GCM envelope bound to medical_records.body:<id>, like patients.phi.
--
-- Records are never edited or deleted. A correction is a new record that amends an earlier one
-- of the same patient and type; a record is amended at most once (UNIQUE amends_id), so the
-- versions of a record form a chain whose tip (the record nobody amends) is the current one.
-- To correct a corrected record, amend the latest version.
SET LOCAL lock_timeout = '5s';

CREATE TABLE medical_records (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    patient_id  uuid NOT NULL CONSTRAINT medical_records_patient_id_fkey REFERENCES patients (id),
    type        text NOT NULL
                CONSTRAINT medical_records_type_check CHECK (type IN ('note', 'diagnosis', 'prescription', 'lab_result')),
    -- nonce (12) + ciphertext + tag (16); the edge caps bodies far below the upper bound.
    body        bytea NOT NULL CONSTRAINT medical_records_body_check CHECK (octet_length(body) BETWEEN 29 AND 131072),
    body_key_id text NOT NULL,
    author_id   uuid NOT NULL CONSTRAINT medical_records_author_id_fkey REFERENCES users (id),
    recorded_at timestamptz NOT NULL DEFAULT now(),  -- clinical time (when it happened)
    created_at  timestamptz NOT NULL DEFAULT now(),  -- when it was written down here
    amends_id   uuid,
    -- Targets of the amendment foreign key: (id, patient_id, type) is unique because id is.
    CONSTRAINT medical_records_id_patient_id_type_key UNIQUE (id, patient_id, type),
    -- An amendment names a record of the same patient and type (checked by the database,
    -- whatever the application does). MATCH SIMPLE: an original (amends_id NULL) is not checked.
    CONSTRAINT medical_records_amends_id_fkey FOREIGN KEY (amends_id, patient_id, type)
        REFERENCES medical_records (id, patient_id, type),
    -- A record is amended at most once: the chain never forks. Also the index that finds a
    -- record's amendment (superseded_by) and walks a chain forwards.
    CONSTRAINT medical_records_amends_id_key UNIQUE (amends_id),
    CONSTRAINT medical_records_amends_id_check CHECK (amends_id <> id)
);
-- GET /patients/{id}/records: newest recorded first, optionally one type.
CREATE INDEX medical_records_patient_id_recorded_at_id_idx ON medical_records (patient_id, recorded_at, id);
CREATE INDEX medical_records_patient_id_type_recorded_at_id_idx ON medical_records (patient_id, type, recorded_at, id);
-- Data-key rotation finds the bodies under an old key.
CREATE INDEX medical_records_body_key_id_idx ON medical_records (body_key_id);

-- Append-only, even for the table's owner, with one exception: data-key rotation re-enciphers
-- a body under the active key (`keys rotate`), which must write the new envelope in place
-- (the envelope is bound to its row id, so it cannot move to a new row). The database holds no
-- keys and cannot tell a re-encipherment from a rewrite, so it allows the narrowest UPDATE that
-- rotation needs: every other column unchanged (compared as a whole row, so a column added
-- later is protected too) and the key id changed. The app role holds UPDATE on those two
-- columns only; each re-encipherment is audited (medical_record.reencrypt).
CREATE FUNCTION medical_records_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (to_jsonb(NEW) - 'body' - 'body_key_id') = (to_jsonb(OLD) - 'body' - 'body_key_id')
           AND NEW.body_key_id IS DISTINCT FROM OLD.body_key_id THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'medical records are append-only: % refused (amend a record with a new one)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER medical_records_append_only BEFORE UPDATE OR DELETE ON medical_records
    FOR EACH ROW EXECUTE FUNCTION medical_records_refuse_change();
CREATE TRIGGER medical_records_no_truncate BEFORE TRUNCATE ON medical_records
    FOR EACH STATEMENT EXECUTE FUNCTION medical_records_refuse_change();

GRANT SELECT, INSERT ON medical_records TO clarity_app;
GRANT UPDATE (body, body_key_id) ON medical_records TO clarity_app;

-- Row-level security, a second wall behind the WHERE clauses of sql/records.sql: a record is
-- visible when its patient is, which the patients policies decide (0005, 0007: an admin all,
-- a provider their own and those under an active emergency grant, anyone else none). A new
-- record must be the actor's own writing; only an admin's transaction (the maintenance
-- commands run as one) may re-encipher.
ALTER TABLE medical_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE medical_records FORCE ROW LEVEL SECURITY;

CREATE POLICY medical_records_select ON medical_records FOR SELECT
    USING (EXISTS (SELECT 1 FROM patients p WHERE p.id = medical_records.patient_id));

CREATE POLICY medical_records_insert ON medical_records FOR INSERT
    WITH CHECK (author_id = clarity_actor_id()
                AND EXISTS (SELECT 1 FROM patients p WHERE p.id = medical_records.patient_id));

CREATE POLICY medical_records_reencrypt ON medical_records FOR UPDATE
    USING (clarity_actor_role() = 'admin')
    WITH CHECK (clarity_actor_role() = 'admin');
