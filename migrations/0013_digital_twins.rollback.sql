SET LOCAL lock_timeout = '5s';
DROP TABLE digital_twin_versions;
DROP FUNCTION digital_twin_versions_refuse_change();
