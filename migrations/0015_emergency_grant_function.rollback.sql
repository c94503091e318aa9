SET LOCAL lock_timeout = '5s';
ALTER POLICY patients_provider_own ON patients
    USING (provider_id = clarity_actor_id()
           OR EXISTS (SELECT 1 FROM emergency_access_grants g
                       WHERE g.patient_id = patients.id
                         AND g.provider_id = clarity_actor_id()
                         AND g.expires_at > now()))
    WITH CHECK (clarity_actor_role() = 'provider'
                AND (provider_id = clarity_actor_id()
                     OR EXISTS (SELECT 1 FROM emergency_access_grants g
                                 WHERE g.patient_id = patients.id
                                   AND g.provider_id = clarity_actor_id()
                                   AND g.expires_at > now())));
DROP FUNCTION clarity_holds_emergency_grant(uuid, uuid);
