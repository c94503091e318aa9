-- One definition of "the actor holds an active emergency-access grant for this patient",
-- used by the queries in sql/ and the patients policy instead of a copy of the sub-select each.
SET LOCAL lock_timeout = '5s';

CREATE FUNCTION clarity_holds_emergency_grant(patient_id uuid, actor_id uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM emergency_access_grants g
                    WHERE g.patient_id = $1 AND g.provider_id = $2 AND g.expires_at > now())
$$;

ALTER POLICY patients_provider_own ON patients
    USING (provider_id = clarity_actor_id() OR clarity_holds_emergency_grant(id, clarity_actor_id()))
    WITH CHECK (clarity_actor_role() = 'provider'
                AND (provider_id = clarity_actor_id() OR clarity_holds_emergency_grant(id, clarity_actor_id())));
