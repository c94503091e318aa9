-- Row-level security on emergency-access grants, a second wall behind sql/emergency_access.sql
-- (only admins list grants): each row names a patient and the provider who opened them, and a
-- reason that may hold clinical detail. An admin's transaction sees every grant, a provider's
-- only the grants they hold, anyone else's (an auditor's, or one with no actor) none. Auditors
-- get no grant rows: every grant is in the audit trail already (emergency_access.grant, with
-- the patient, the provider and the grant's id), which is what they review, without the reason.
--
-- clarity_holds_emergency_grant (0015), which the patients policy and the queries in sql/ call
-- with the actor's own id, stays SECURITY INVOKER: the grants policies apply inside it and let a
-- provider see exactly the rows it asks about (their own grants), an admin all of them. As
-- SECURITY DEFINER it would not get past FORCE for an owner that is not a superuser, and for
-- one that is it would answer for any provider, not just the actor.
--
-- The read policy is one CASE on the actor's role rather than "role = 'admin' OR (role =
-- 'provider' AND ...)": an equality on the role has no statistics (see 0014), so the planner
-- took that OR as keeping 0.5 % of rows and answered an admin's page of grants with a scan and
-- a sort of the whole table instead of the (granted_at, id) index walk; a CASE it estimates at
-- half. The role test stays on the provider's side (unlike patients' read side): a former
-- provider whose role changed reads neither their old grants nor, through them, patients.
SET LOCAL lock_timeout = '5s';

ALTER TABLE emergency_access_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE emergency_access_grants FORCE ROW LEVEL SECURITY;

CREATE POLICY emergency_access_grants_select ON emergency_access_grants FOR SELECT
    USING (CASE clarity_actor_role()
               WHEN 'admin' THEN true
               WHEN 'provider' THEN provider_id = clarity_actor_id()
               ELSE false
           END);

-- Only a provider breaks the glass, for themself. The patient is deliberately not required to
-- be visible (opening one who is not is the point); the foreign key, which row-level security
-- does not filter, still requires that they exist.
CREATE POLICY emergency_access_grants_insert ON emergency_access_grants FOR INSERT
    WITH CHECK (clarity_actor_role() = 'provider' AND provider_id = clarity_actor_id());

-- Grants never change; only an admin's transaction (key rotation runs as one) re-enciphers
-- reasons, the only columns the app role may update (0008).
CREATE POLICY emergency_access_grants_reencrypt ON emergency_access_grants FOR UPDATE
    USING (clarity_actor_role() = 'admin')
    WITH CHECK (clarity_actor_role() = 'admin');
