-- The audit trail: append-only, even for the table's owner.
SET LOCAL lock_timeout = '5s';

CREATE TABLE audit_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_id    uuid,
    actor_role  text,
    action      char(1) NOT NULL CONSTRAINT audit_events_action_check CHECK (action IN ('C', 'R', 'U', 'D', 'E')),
    event_type  text NOT NULL,
    entity_type text,
    entity_id   text,
    patient_id  uuid,
    outcome     text NOT NULL CONSTRAINT audit_events_outcome_check CHECK (outcome IN ('success', 'failure', 'denied')),
    client_addr inet,
    request_id  text,
    fields      text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_patient_id_occurred_at_idx ON audit_events (patient_id, occurred_at)
    WHERE patient_id IS NOT NULL;
CREATE INDEX audit_events_actor_id_occurred_at_idx ON audit_events (actor_id, occurred_at);
-- Failed-login counting for rate limits, per account and per client address.
CREATE INDEX audit_events_login_actor_id_occurred_at_idx ON audit_events (actor_id, occurred_at)
    WHERE event_type = 'auth.login';
CREATE INDEX audit_events_login_client_addr_occurred_at_idx ON audit_events (client_addr, occurred_at)
    WHERE event_type = 'auth.login';

CREATE FUNCTION audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();

GRANT SELECT, INSERT ON audit_events TO clarity_app;
