SET LOCAL lock_timeout = '5s';
DROP TABLE alerts;
DROP TABLE alert_rules;
-- Its partitions go with it.
DROP TABLE biometric_readings;
DROP FUNCTION clarity_create_biometric_partitions(integer, integer);
