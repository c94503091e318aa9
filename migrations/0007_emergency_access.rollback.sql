SET LOCAL lock_timeout = '5s';
ALTER POLICY patients_provider_own ON patients
    USING (clarity_actor_role() = 'provider' AND provider_id = clarity_actor_id())
    WITH CHECK (clarity_actor_role() = 'provider' AND provider_id = clarity_actor_id());
DROP TABLE emergency_access_grants;
