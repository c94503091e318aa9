-- Biometric readings (facts: the app may add and read them, never change them), monthly
-- partitioned by recorded_at; alert rules (global defaults and per-patient overrides) and the
-- alerts that readings outside their effective rule raise.
SET LOCAL lock_timeout = '5s';

-- Readings live in monthly partitions (UTC months) of biometric_readings. This function creates
-- the missing ones from `months_back` months before the current month to `months_ahead` months
-- after it, and returns how many it created. It is idempotent, and the only place partitions
-- are named and bounded: the migration calls it below, `flask --app wsgi biometrics partitions`
-- (sql/biometrics.sql upsert_biometric_partitions) calls it as the table's owner. There is no
-- DEFAULT partition: a reading no partition holds fails (SQLSTATE 23514), and the API answers
-- 422 "recorded_at out of range". The app role may not execute it (DDL needs the owner).
CREATE FUNCTION clarity_create_biometric_partitions(months_back integer, months_ahead integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    -- Month arithmetic on UTC wall-clock times: timestamptz + '1 month' would follow the
    -- session's time zone (and its DST changes).
    first_month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => months_back);
    month_start timestamp;
    partition_name text;
    created integer := 0;
BEGIN
    IF months_back < 0 OR months_ahead < 0 THEN
        RAISE EXCEPTION 'months_back and months_ahead must be >= 0' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 0 .. months_back + months_ahead LOOP
        month_start := first_month + make_interval(months => i);
        partition_name := 'biometric_readings_' || to_char(month_start, 'YYYY_MM');
        IF to_regclass(quote_ident(partition_name)) IS NULL THEN
            EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF biometric_readings FOR VALUES FROM (%L) TO (%L)',
                           partition_name, month_start AT TIME ZONE 'UTC',
                           (month_start + interval '1 month') AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;
REVOKE EXECUTE ON FUNCTION clarity_create_biometric_partitions(integer, integer) FROM PUBLIC;

-- Kinds, units and plausible value ranges: a value outside its range is a device or entry
-- error, not a clinical finding. MIRRORS clarity/services/biometrics.py KINDS (the API's 422
-- checks); change both together, in a new migration (tests/integration/test_biometrics_ingest.py
-- compares them).
CREATE TABLE biometric_readings (
    patient_id    uuid NOT NULL CONSTRAINT biometric_readings_patient_id_fkey REFERENCES patients (id),
    recorded_at   timestamptz NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    value         double precision NOT NULL,
    kind          text NOT NULL CONSTRAINT biometric_readings_kind_check CHECK (kind IN (
                      'heart_rate', 'bp_systolic', 'bp_diastolic', 'spo2', 'temperature',
                      'respiratory_rate', 'glucose', 'weight', 'steps')),
    unit          text NOT NULL,
    source_device text NOT NULL
                  CONSTRAINT biometric_readings_source_device_check CHECK (length(source_device) BETWEEN 1 AND 200),
    CONSTRAINT biometric_readings_unit_check CHECK (unit = CASE kind
        WHEN 'heart_rate'       THEN 'bpm'
        WHEN 'bp_systolic'      THEN 'mmHg'
        WHEN 'bp_diastolic'     THEN 'mmHg'
        WHEN 'spo2'             THEN '%'
        WHEN 'temperature'      THEN '°C'
        WHEN 'respiratory_rate' THEN 'breaths/min'
        WHEN 'glucose'          THEN 'mg/dL'
        WHEN 'weight'           THEN 'kg'
        WHEN 'steps'            THEN 'steps'
    END),
    -- NaN compares above every number, so it fails too.
    CONSTRAINT biometric_readings_value_check CHECK (CASE kind
        WHEN 'heart_rate'       THEN value BETWEEN 20 AND 300
        WHEN 'bp_systolic'      THEN value BETWEEN 40 AND 300
        WHEN 'bp_diastolic'     THEN value BETWEEN 20 AND 200
        WHEN 'spo2'             THEN value BETWEEN 40 AND 100
        WHEN 'temperature'      THEN value BETWEEN 20 AND 45
        WHEN 'respiratory_rate' THEN value BETWEEN 0 AND 100
        WHEN 'glucose'          THEN value BETWEEN 10 AND 2000
        WHEN 'weight'           THEN value BETWEEN 0.2 AND 700
        WHEN 'steps'            THEN value BETWEEN 0 AND 100000
    END),
    -- A reading repeated by the same device at the same instant is stored once (ingestion
    -- inserts ON CONFLICT DO NOTHING). Unique constraints of a partitioned table must hold its
    -- partition key; recorded_at second also serves "a patient's readings, newest first".
    CONSTRAINT biometric_readings_reading_key UNIQUE (patient_id, recorded_at, kind, source_device)
) PARTITION BY RANGE (recorded_at);
-- One kind's readings of a patient over time: filtered lists, summaries, the latest per kind.
CREATE INDEX biometric_readings_patient_id_kind_recorded_at_idx ON biometric_readings (patient_id, kind, recorded_at);

-- 24 months back (the oldest readings the API accepts: clarity/services/biometrics.py
-- HISTORY_MONTHS) to 3 months ahead; `biometrics partitions` keeps the months ahead coming.
DO $$ BEGIN PERFORM clarity_create_biometric_partitions(24, 3); END $$;

-- A reading is visible (and may be added) exactly when its patient is: the patients table's own
-- policies decide (a provider's transaction sees only their patients, an admin's all, others none).
ALTER TABLE biometric_readings ENABLE ROW LEVEL SECURITY;
ALTER TABLE biometric_readings FORCE ROW LEVEL SECURITY;
CREATE POLICY biometric_readings_patient_visible ON biometric_readings
    USING (EXISTS (SELECT 1 FROM patients p WHERE p.id = biometric_readings.patient_id))
    WITH CHECK (EXISTS (SELECT 1 FROM patients p WHERE p.id = biometric_readings.patient_id));

-- Privileges are checked on the parent only; the app has none on the partitions themselves,
-- so it cannot read around the parent's policies.
GRANT SELECT, INSERT ON biometric_readings TO clarity_app;


-- Threshold rules: one global default per kind (patient_id NULL) and at most one override per
-- patient and kind, which beats the default for that patient.
CREATE TABLE alert_rules (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    patient_id  uuid CONSTRAINT alert_rules_patient_id_fkey REFERENCES patients (id),
    kind        text NOT NULL CONSTRAINT alert_rules_kind_check CHECK (kind IN (
                    'heart_rate', 'bp_systolic', 'bp_diastolic', 'spo2', 'temperature',
                    'respiratory_rate', 'glucose', 'weight', 'steps')),
    min_value   double precision,
    max_value   double precision,
    severity    text NOT NULL CONSTRAINT alert_rules_severity_check CHECK (severity IN ('low', 'medium', 'high')),
    created_by  uuid CONSTRAINT alert_rules_created_by_fkey REFERENCES users (id),
    updated_by  uuid CONSTRAINT alert_rules_updated_by_fkey REFERENCES users (id),
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_rules_bounds_check CHECK (
        (min_value IS NOT NULL OR max_value IS NOT NULL)
        AND (min_value IS NULL OR max_value IS NULL OR min_value < max_value))
);
CREATE UNIQUE INDEX alert_rules_kind_key ON alert_rules (kind) WHERE patient_id IS NULL;
CREATE UNIQUE INDEX alert_rules_patient_id_kind_key ON alert_rules (patient_id, kind) WHERE patient_id IS NOT NULL;
CREATE TRIGGER alert_rules_touch_updated_at BEFORE UPDATE ON alert_rules
    FOR EACH ROW EXECUTE FUNCTION clarity_touch_updated_at();

-- Global defaults for adults (no default for weight or steps: those need a patient's own rule).
INSERT INTO alert_rules (kind, min_value, max_value, severity) VALUES
    ('heart_rate',       40,   130,  'high'),
    ('bp_systolic',      90,   180,  'high'),
    ('bp_diastolic',     50,   110,  'medium'),
    ('spo2',             90,   NULL, 'high'),
    ('temperature',      35.0, 38.5, 'medium'),
    ('respiratory_rate', 8,    25,   'high'),
    ('glucose',          70,   250,  'high');

-- Everyone with an actor reads the global defaults; a patient's overrides follow the patient's
-- visibility. Only an admin's transaction may write a global default.
ALTER TABLE alert_rules ENABLE ROW LEVEL SECURITY;
ALTER TABLE alert_rules FORCE ROW LEVEL SECURITY;
CREATE POLICY alert_rules_read ON alert_rules FOR SELECT
    USING (patient_id IS NULL OR EXISTS (SELECT 1 FROM patients p WHERE p.id = alert_rules.patient_id));
CREATE POLICY alert_rules_insert ON alert_rules FOR INSERT
    WITH CHECK (CASE WHEN patient_id IS NULL THEN clarity_actor_role() = 'admin'
                     ELSE EXISTS (SELECT 1 FROM patients p WHERE p.id = alert_rules.patient_id) END);
CREATE POLICY alert_rules_update ON alert_rules FOR UPDATE
    USING (CASE WHEN patient_id IS NULL THEN clarity_actor_role() = 'admin'
                ELSE EXISTS (SELECT 1 FROM patients p WHERE p.id = alert_rules.patient_id) END)
    WITH CHECK (CASE WHEN patient_id IS NULL THEN clarity_actor_role() = 'admin'
                     ELSE EXISTS (SELECT 1 FROM patients p WHERE p.id = alert_rules.patient_id) END);
CREATE POLICY alert_rules_delete ON alert_rules FOR DELETE
    USING (CASE WHEN patient_id IS NULL THEN clarity_actor_role() = 'admin'
                ELSE EXISTS (SELECT 1 FROM patients p WHERE p.id = alert_rules.patient_id) END);

GRANT SELECT, INSERT, UPDATE, DELETE ON alert_rules TO clarity_app;


-- An alert: one reading outside its effective rule, with the rule's bounds as they were then.
-- A reading raises at most one alert (the reading's key is unique here, and ingestion inserts
-- ON CONFLICT DO NOTHING). Status: open -> acknowledged -> resolved, or open -> resolved.
CREATE TABLE alerts (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    patient_id          uuid NOT NULL CONSTRAINT alerts_patient_id_fkey REFERENCES patients (id),
    reading_recorded_at timestamptz NOT NULL,
    value               double precision NOT NULL,
    min_value           double precision,
    max_value           double precision,
    kind                text NOT NULL,
    source_device       text NOT NULL,
    rule_scope          text NOT NULL CONSTRAINT alerts_rule_scope_check CHECK (rule_scope IN ('global', 'patient')),
    severity            text NOT NULL CONSTRAINT alerts_severity_check CHECK (severity IN ('low', 'medium', 'high')),
    status              text NOT NULL DEFAULT 'open'
                        CONSTRAINT alerts_status_check CHECK (status IN ('open', 'acknowledged', 'resolved')),
    acknowledged_by     uuid CONSTRAINT alerts_acknowledged_by_fkey REFERENCES users (id),
    acknowledged_at     timestamptz,
    resolved_by         uuid CONSTRAINT alerts_resolved_by_fkey REFERENCES users (id),
    resolved_at         timestamptz,
    version             integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alerts_reading_key UNIQUE (patient_id, kind, source_device, reading_recorded_at),
    CONSTRAINT alerts_acknowledged_check CHECK (
        (acknowledged_at IS NULL) = (acknowledged_by IS NULL)
        AND (status <> 'acknowledged' OR acknowledged_at IS NOT NULL)),
    CONSTRAINT alerts_resolved_check CHECK (
        (resolved_at IS NULL) = (resolved_by IS NULL)
        AND (status = 'resolved') = (resolved_at IS NOT NULL))
);
-- A patient's alerts and everyone's worklist (by status), newest reading first.
CREATE INDEX alerts_patient_id_status_reading_recorded_at_id_idx ON alerts (patient_id, status, reading_recorded_at, id);
CREATE INDEX alerts_status_reading_recorded_at_id_idx ON alerts (status, reading_recorded_at, id);
CREATE TRIGGER alerts_touch_updated_at BEFORE UPDATE ON alerts
    FOR EACH ROW EXECUTE FUNCTION clarity_touch_updated_at();

ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE alerts FORCE ROW LEVEL SECURITY;
CREATE POLICY alerts_patient_visible ON alerts
    USING (EXISTS (SELECT 1 FROM patients p WHERE p.id = alerts.patient_id))
    WITH CHECK (EXISTS (SELECT 1 FROM patients p WHERE p.id = alerts.patient_id));

GRANT SELECT, INSERT, UPDATE ON alerts TO clarity_app;
