-- name: create_biometric_staging#
-- This session's staging table for COPY, created when missing. Temporary (never visible to
-- another session, no WAL) and emptied at every commit; created once per pooled connection
-- rather than per batch, which would churn the system catalogs. DDL: run it, do not PREPARE it.
CREATE TEMP TABLE IF NOT EXISTS biometric_staging (
    kind          text NOT NULL,
    value         double precision NOT NULL,
    unit          text NOT NULL,
    recorded_at   timestamptz NOT NULL,
    source_device text NOT NULL
) ON COMMIT DELETE ROWS;

-- name: delete_biometric_staging!
-- Empty this session's staging table before a batch is copied into it. Commit empties it, so
-- this finds nothing to do (an empty heap) unless a batch was already staged in the same
-- transaction, whose rows the next INSERT … SELECT would otherwise store again, under its
-- patient. Cheaper than consuming the rows with DELETE … RETURNING in the INSERT, which cost
-- about 8 ms of database time a 10,000-reading batch.
DELETE FROM biometric_staging;

-- name: copy_biometric_staging
-- COPY a batch into the staging table: psycopg's cursor.copy(), set_types(text, float8, text,
-- timestamptz, text), then one write_row per reading (kind, value, unit, recorded_at,
-- source_device). Binary: about 5x less client CPU than text. Not PREPARE-able.
COPY biometric_staging (kind, value, unit, recorded_at, source_device) FROM STDIN (FORMAT BINARY);

-- name: insert_biometric_readings^
-- Store the staged batch as one patient's readings and raise their alerts, in one statement:
-- a reading already stored (same patient, kind, device and instant, also twice within the
-- batch: the first is kept) is skipped; the patient's existence is checked once for the
-- statement, not per row (migrations/0018: a statement trigger adds the patient to
-- biometric_patients, whose foreign key checks it); every reading this statement did insert
-- that lies outside its effective rule (the patient's override, else the global default, as
-- in sql/alerts.sql list_alert_rules) raises one alert. Alerts conflict on the reading's key
-- (ON CONFLICT DO NOTHING), so a reading never raises two. The staging rows stay until
-- commit (delete_biometric_staging empties the table before the next batch).
-- Params: patient_id. Returns: stored, alerts_raised.
WITH stored AS (
    INSERT INTO biometric_readings (patient_id, recorded_at, value, kind, unit, source_device)
    SELECT %(patient_id)s::uuid, recorded_at, value, kind, unit, source_device
      FROM biometric_staging
    ON CONFLICT DO NOTHING
    RETURNING patient_id, recorded_at, value, kind, source_device
), rules AS (
    SELECT DISTINCT ON (kind) kind, min_value, max_value, severity,
           CASE WHEN patient_id IS NULL THEN 'global' ELSE 'patient' END AS rule_scope
      FROM alert_rules
     WHERE patient_id = %(patient_id)s::uuid OR patient_id IS NULL
     ORDER BY kind, patient_id NULLS LAST
), raised AS (
    INSERT INTO alerts (patient_id, reading_recorded_at, value, min_value, max_value, kind,
                        source_device, rule_scope, severity)
    SELECT s.patient_id, s.recorded_at, s.value, r.min_value, r.max_value, s.kind,
           s.source_device, r.rule_scope, r.severity
      FROM stored s
      JOIN rules r ON r.kind = s.kind
     WHERE s.value < r.min_value OR s.value > r.max_value
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM stored) AS stored,
       (SELECT count(*) FROM raised) AS alerts_raised;

-- name: insert_biometric_reading!
-- One reading, statement by statement and without alerts: only the row-at-a-time baseline
-- that bench/ingest.py measures the COPY path against. Params: patient_id, recorded_at, value,
-- kind, unit, source_device.
INSERT INTO biometric_readings (patient_id, recorded_at, value, kind, unit, source_device)
VALUES (%(patient_id)s, %(recorded_at)s, %(value)s, %(kind)s, %(unit)s, %(source_device)s)
ON CONFLICT DO NOTHING;

-- name: list_biometric_readings
-- A patient's readings of the given kinds, newest first, after a keyset cursor over
-- (recorded_at, kind, source_device), with optional time filters (null = none): recorded_from
-- (inclusive), recorded_to (exclusive). Scope the patient first (sql/patients.sql
-- get_patient_access). The unique key (patient_id, kind, recorded_at, source_device) orders
-- one kind at a time, so each kind is one backward index probe that stops at `limit` rows,
-- and the page is the newest `limit` of those (at most kinds x limit rows), never a sort of
-- the patient's history. All kinds: pass every kind (clarity.services.biometrics.KINDS, which
-- the kind CHECK mirrors). Params: patient_id, kinds, recorded_from, recorded_to,
-- after_recorded_at, after_kind, after_source_device, limit. Custom plans: the filter set
-- decides the index bounds and, with the time range known, which monthly partitions are
-- planned at all.
-- plan: custom
SELECT r.kind, r.value, r.unit, r.recorded_at, r.source_device
  FROM unnest(%(kinds)s::text[]) AS k (kind)
 CROSS JOIN LATERAL (
        SELECT b.kind, b.value, b.unit, b.recorded_at, b.source_device
          FROM biometric_readings b
         WHERE b.patient_id = %(patient_id)s::uuid
           AND b.kind = k.kind
           AND (%(recorded_from)s::timestamptz IS NULL OR b.recorded_at >= %(recorded_from)s::timestamptz)
           AND (%(recorded_to)s::timestamptz IS NULL OR b.recorded_at < %(recorded_to)s::timestamptz)
           AND (%(after_recorded_at)s::timestamptz IS NULL
                OR (b.recorded_at, b.kind, b.source_device)
                   < (%(after_recorded_at)s::timestamptz, %(after_kind)s::text, %(after_source_device)s::text))
         ORDER BY b.recorded_at DESC, b.source_device DESC
         LIMIT %(limit)s) AS r
 ORDER BY r.recorded_at DESC, r.kind DESC, r.source_device DESC
 LIMIT %(limit)s;

-- name: list_biometric_summary
-- Per kind and per UTC hour or day (bucket: 'hour' or 'day'): count, min, max and average of
-- a patient's readings of the given kinds (all kinds: every kind, as list_biometric_readings)
-- in [recorded_from, recorded_to). One range scan of the unique key per kind, bounded by the
-- patient, the kind and the range: a plain `kind = ANY (kinds)` let the planner bound the
-- scan by the patient alone and step over other times' entries of every kind. Params:
-- patient_id, kinds, bucket, recorded_from, recorded_to. Custom plans, so only the
-- partitions of the range are planned and scanned.
-- plan: custom
SELECT k.kind, s.unit, s.bucket_start, s.count, s.min, s.max, s.avg
  FROM unnest(%(kinds)s::text[]) AS k (kind)
 CROSS JOIN LATERAL (
        SELECT b.unit, date_trunc(%(bucket)s::text, b.recorded_at, 'UTC') AS bucket_start,
               count(*) AS count, min(b.value) AS min, max(b.value) AS max, avg(b.value) AS avg
          FROM biometric_readings b
         WHERE b.patient_id = %(patient_id)s::uuid
           AND b.kind = k.kind
           AND b.recorded_at >= %(recorded_from)s::timestamptz
           AND b.recorded_at < %(recorded_to)s::timestamptz
         GROUP BY b.unit, bucket_start) AS s
 ORDER BY k.kind, s.bucket_start;

-- name: list_biometric_latest
-- A patient's latest reading of each of the given kinds that has one: one backward probe of
-- the unique key per kind (newest partition first), not a scan of the patient's history.
-- Params: patient_id, kinds.
SELECT r.kind, r.value, r.unit, r.recorded_at, r.source_device
  FROM unnest(%(kinds)s::text[]) AS k (kind)
 CROSS JOIN LATERAL (
        SELECT b.kind, b.value, b.unit, b.recorded_at, b.source_device
          FROM biometric_readings b
         WHERE b.patient_id = %(patient_id)s::uuid AND b.kind = k.kind
         ORDER BY b.recorded_at DESC, b.source_device DESC
         LIMIT 1) AS r
 ORDER BY r.kind;

-- name: create_biometric_partitions$
-- Create the missing monthly partitions from months_back months before the current (UTC) month
-- to months_ahead months after it; returns how many were created. As the table's owner only:
-- the function is not executable by the app role. Params: months_back, months_ahead.
SELECT clarity_create_biometric_partitions(%(months_back)s::integer, %(months_ahead)s::integer);

-- name: list_biometric_partitions
-- The partitions of biometric_readings with their bounds, oldest first.
-- Returns: name, starts_at (inclusive), ends_at (exclusive).
SELECT c.relname::text AS name,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), $$FROM \('([^']+)'\)$$))[1]::timestamptz AS starts_at,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), $$TO \('([^']+)'\)$$))[1]::timestamptz AS ends_at
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'biometric_readings'::regclass
 ORDER BY starts_at;
