SET LOCAL lock_timeout = '5s';
REVOKE UPDATE (reason, reason_key_id) ON emergency_access_grants FROM clarity_app;
DROP INDEX emergency_access_grants_reason_key_id_idx;
DROP TRIGGER patients_touch_updated_at ON patients;
CREATE TRIGGER patients_touch_updated_at BEFORE UPDATE ON patients
    FOR EACH ROW EXECUTE FUNCTION clarity_touch_updated_at();
