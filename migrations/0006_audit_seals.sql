-- Tamper evidence for the audit trail: committed events are sealed into a SHA-256 hash chain.
--
-- Each event records the id of the transaction that wrote it (xid). A sealer (one at a time,
-- under an advisory lock) takes the horizon pg_snapshot_xmin(pg_current_snapshot()): every
-- transaction with an xid below it has finished, so the events below it are final. It seals
-- them in (xid, id) order. Requests take no lock for this: sealing never waits on them and
-- they never wait on it.
SET LOCAL lock_timeout = '5s';

-- pg_current_xact_id() is stable, so existing rows get this migration's xid without a table
-- rewrite; new rows get the xid of the transaction that inserts them.
ALTER TABLE audit_events ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
-- The sealer's keyset: (xid, id) after the last sealed event.
CREATE INDEX audit_events_xid_id_idx ON audit_events (xid, id);
-- GET /api/v1/audit-events without a patient or actor filter: newest first.
CREATE INDEX audit_events_occurred_at_id_idx ON audit_events (occurred_at, id);

CREATE TABLE audit_seals (
    seq       bigint PRIMARY KEY CONSTRAINT audit_seals_seq_check CHECK (seq > 0),
    event_id  bigint NOT NULL CONSTRAINT audit_seals_event_id_key UNIQUE,
    prev_hash bytea NOT NULL CONSTRAINT audit_seals_prev_hash_check CHECK (octet_length(prev_hash) = 32),
    hash      bytea NOT NULL CONSTRAINT audit_seals_hash_check CHECK (octet_length(hash) = 32),
    -- When this seal's batch committed, every event with an xid below this was sealed.
    horizon   xid8 NOT NULL,
    sealed_at timestamptz NOT NULL DEFAULT now()
);
-- No foreign key to audit_events on purpose: a deleted event must leave its seal behind as
-- evidence, not be refused (the owner can disable triggers) or cascade.

CREATE FUNCTION audit_seals_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit seals are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_seals_append_only BEFORE UPDATE OR DELETE ON audit_seals
    FOR EACH ROW EXECUTE FUNCTION audit_seals_refuse_change();
CREATE TRIGGER audit_seals_no_truncate BEFORE TRUNCATE ON audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION audit_seals_refuse_change();

GRANT SELECT, INSERT ON audit_seals TO clarity_app;
