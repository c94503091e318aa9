-- A page of a patient list is audited as one event that names every patient it showed
-- (patient_ids), the way FHIR's AuditEvent lists several entities, instead of one event per
-- patient: a page of 50 wrote 50 events, each with five index entries and a seal of its own.
-- A patient's access history finds these events through the GIN index below
-- (patient_ids @> ARRAY[id]) beside the single-patient events (patient_id = id).
--
-- The column is null on every other event, so the GIN index holds only list events and a hash
-- chain sealed before this migration verifies unchanged (audit_chain.canonical hashes the
-- column only when it is set). Built CONCURRENTLY, outside a transaction (see 0017).
-- transactional: false

ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS patient_ids uuid[];

DROP INDEX CONCURRENTLY IF EXISTS audit_events_patient_ids_idx;
CREATE INDEX CONCURRENTLY audit_events_patient_ids_idx
    ON audit_events USING gin (patient_ids) WHERE patient_ids IS NOT NULL;
