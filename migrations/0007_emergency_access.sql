-- Emergency access (break-glass): a provider opens a patient who is not theirs for a limited
-- time by stating a reason. Grants are records: the app may add and read them, never change them.
SET LOCAL lock_timeout = '5s';

CREATE TABLE emergency_access_grants (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    patient_id    uuid NOT NULL CONSTRAINT emergency_access_grants_patient_id_fkey REFERENCES patients (id),
    provider_id   uuid NOT NULL CONSTRAINT emergency_access_grants_provider_id_fkey REFERENCES users (id),
    -- The stated reason may hold clinical detail: enciphered like PHI, bound to its row.
    reason        bytea NOT NULL,
    reason_key_id text NOT NULL,
    granted_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    CONSTRAINT emergency_access_grants_expires_at_check CHECK (expires_at > granted_at)
);
CREATE INDEX emergency_access_grants_patient_id_provider_id_expires_at_idx
    ON emergency_access_grants (patient_id, provider_id, expires_at);
CREATE INDEX emergency_access_grants_granted_at_id_idx ON emergency_access_grants (granted_at, id);

GRANT SELECT, INSERT ON emergency_access_grants TO clarity_app;

-- A provider's transaction also sees (and may update) a patient they hold an active grant for.
ALTER POLICY patients_provider_own ON patients
    USING (clarity_actor_role() = 'provider'
           AND (provider_id = clarity_actor_id()
                OR EXISTS (SELECT 1 FROM emergency_access_grants g
                            WHERE g.patient_id = patients.id
                              AND g.provider_id = clarity_actor_id()
                              AND g.expires_at > now())))
    WITH CHECK (clarity_actor_role() = 'provider'
                AND (provider_id = clarity_actor_id()
                     OR EXISTS (SELECT 1 FROM emergency_access_grants g
                                 WHERE g.patient_id = patients.id
                                   AND g.provider_id = clarity_actor_id()
                                   AND g.expires_at > now())));
