-- Patients: every PHI field lives in one AES-256-GCM envelope (phi) bound to its row;
-- blind indexes (HMAC-SHA256) make MRN, email and last name searchable without plaintext.
SET LOCAL lock_timeout = '5s';

CREATE TABLE patients (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id    uuid NOT NULL CONSTRAINT patients_provider_id_fkey REFERENCES users (id),
    status         text NOT NULL DEFAULT 'active'
                   CONSTRAINT patients_status_check CHECK (status IN ('active', 'inactive', 'deceased')),
    birth_year     smallint NOT NULL CONSTRAINT patients_birth_year_check CHECK (birth_year BETWEEN 1850 AND 2200),
    mrn_bidx       bytea NOT NULL CONSTRAINT patients_mrn_bidx_check CHECK (octet_length(mrn_bidx) = 32),
    email_bidx     bytea CONSTRAINT patients_email_bidx_check CHECK (octet_length(email_bidx) = 32),
    last_name_bidx bytea NOT NULL CONSTRAINT patients_last_name_bidx_check CHECK (octet_length(last_name_bidx) = 32),
    phi            bytea NOT NULL,
    phi_key_id     text NOT NULL,
    version        integer NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz
);
-- A deleted patient is kept for the audit trail; its MRN may be registered again.
CREATE UNIQUE INDEX patients_mrn_bidx_key ON patients (mrn_bidx) WHERE deleted_at IS NULL;
CREATE INDEX patients_email_bidx_idx ON patients (email_bidx) WHERE deleted_at IS NULL;
CREATE INDEX patients_last_name_bidx_idx ON patients (last_name_bidx) WHERE deleted_at IS NULL;
CREATE INDEX patients_created_at_id_idx ON patients (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX patients_provider_id_created_at_id_idx ON patients (provider_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX patients_phi_key_id_idx ON patients (phi_key_id);
CREATE TRIGGER patients_touch_updated_at BEFORE UPDATE ON patients
    FOR EACH ROW EXECUTE FUNCTION clarity_touch_updated_at();

GRANT SELECT, INSERT, UPDATE ON patients TO clarity_app;
