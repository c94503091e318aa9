-- Back to 0017: the foreign key and the two indexes of 0010, 0010's partition function, and no
-- biometric_patients or triggers.
SET LOCAL lock_timeout = '5s';

ALTER TABLE biometric_readings DROP CONSTRAINT biometric_readings_reading_key;
ALTER TABLE biometric_readings ADD CONSTRAINT biometric_readings_reading_key
    UNIQUE (patient_id, recorded_at, kind, source_device);
CREATE INDEX biometric_readings_patient_id_kind_recorded_at_idx ON biometric_readings (patient_id, kind, recorded_at);

-- Checks every stored reading (biometric_patients kept them valid).
ALTER TABLE biometric_readings ADD CONSTRAINT biometric_readings_patient_id_fkey
    FOREIGN KEY (patient_id) REFERENCES patients (id);

CREATE OR REPLACE FUNCTION clarity_create_biometric_partitions(months_back integer, months_ahead integer)
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

DROP FUNCTION clarity_add_biometric_partition_triggers(regclass);
-- CASCADE: the triggers that run it, on the parent and on every partition (named by no file).
DROP FUNCTION clarity_biometric_patients_add() CASCADE;
-- Its policy, grant and triggers go with it.
DROP TABLE biometric_patients;
DROP FUNCTION biometric_patients_refuse_change();
