-- Back to one event per listed patient: the list events' patient_ids are dropped with the
-- column (their seals then no longer verify: roll back only a database without list events).
-- transactional: false

DROP INDEX CONCURRENTLY IF EXISTS audit_events_patient_ids_idx;
DROP INDEX CONCURRENTLY IF EXISTS audit_events_patient_ids_idx;

ALTER TABLE audit_events DROP COLUMN IF EXISTS patient_ids;
