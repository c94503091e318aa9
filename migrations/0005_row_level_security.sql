-- Row-level security: a second wall behind the WHERE clauses of sql/patients.sql.
-- Policies read the actor context the unit of work sets per transaction (set_config(..., true)):
-- an admin's transaction sees every patient, a provider's only their own, anyone else's
-- (an auditor's, or a transaction with no actor) none. FORCE applies them to the owner too.
SET LOCAL lock_timeout = '5s';

CREATE FUNCTION clarity_actor_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('clarity.actor_id', true), '')::uuid
$$;

CREATE FUNCTION clarity_actor_role() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('clarity.actor_role', true), '')
$$;

ALTER TABLE patients ENABLE ROW LEVEL SECURITY;
ALTER TABLE patients FORCE ROW LEVEL SECURITY;

CREATE POLICY patients_admin_all ON patients
    USING (clarity_actor_role() = 'admin')
    WITH CHECK (clarity_actor_role() = 'admin');

CREATE POLICY patients_provider_own ON patients
    USING (clarity_actor_role() = 'provider' AND provider_id = clarity_actor_id())
    WITH CHECK (clarity_actor_role() = 'provider' AND provider_id = clarity_actor_id());
