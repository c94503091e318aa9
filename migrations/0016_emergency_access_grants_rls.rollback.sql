SET LOCAL lock_timeout = '5s';
DROP POLICY emergency_access_grants_reencrypt ON emergency_access_grants;
DROP POLICY emergency_access_grants_insert ON emergency_access_grants;
DROP POLICY emergency_access_grants_select ON emergency_access_grants;
ALTER TABLE emergency_access_grants NO FORCE ROW LEVEL SECURITY;
ALTER TABLE emergency_access_grants DISABLE ROW LEVEL SECURITY;
