SET LOCAL lock_timeout = '5s';
DROP TABLE medical_records;
DROP FUNCTION medical_records_refuse_change();
