-- The provider policy's read side drops its role test: an equality on the actor's role has no
-- statistics, so the planner took it as filtering out 99.5 % of rows and chose a bitmap scan
-- and a sort over every row after a list's cursor (10 ms a page) instead of the index walk
-- that stops at the page's end. It was redundant: only providers own patients or hold
-- emergency grants, and an admin's rows come from patients_admin_all. Writes keep the test.
SET LOCAL lock_timeout = '5s';

ALTER POLICY patients_provider_own ON patients
    USING (provider_id = clarity_actor_id()
           OR EXISTS (SELECT 1 FROM emergency_access_grants g
                       WHERE g.patient_id = patients.id
                         AND g.provider_id = clarity_actor_id()
                         AND g.expires_at > now()));
