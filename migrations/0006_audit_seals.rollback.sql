SET LOCAL lock_timeout = '5s';
DROP TABLE audit_seals;
DROP FUNCTION audit_seals_refuse_change();
DROP INDEX audit_events_occurred_at_id_idx;
DROP INDEX audit_events_xid_id_idx;
ALTER TABLE audit_events DROP COLUMN xid;
