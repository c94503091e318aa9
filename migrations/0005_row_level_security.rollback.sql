SET LOCAL lock_timeout = '5s';
DROP POLICY patients_provider_own ON patients;
DROP POLICY patients_admin_all ON patients;
ALTER TABLE patients NO FORCE ROW LEVEL SECURITY;
ALTER TABLE patients DISABLE ROW LEVEL SECURITY;
DROP FUNCTION clarity_actor_role();
DROP FUNCTION clarity_actor_id();
