-- Key rotation re-enciphers rows without changing their content: it keeps the version (so
-- clients' ETags stay valid) and updated_at (which now moves only with the version).
SET LOCAL lock_timeout = '5s';

DROP TRIGGER patients_touch_updated_at ON patients;
CREATE TRIGGER patients_touch_updated_at BEFORE UPDATE ON patients
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION clarity_touch_updated_at();

CREATE INDEX emergency_access_grants_reason_key_id_idx ON emergency_access_grants (reason_key_id);
GRANT UPDATE (reason, reason_key_id) ON emergency_access_grants TO clarity_app;
