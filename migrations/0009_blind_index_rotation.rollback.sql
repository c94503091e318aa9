SET LOCAL lock_timeout = '5s';
DROP INDEX patients_mrn_bidx_rotating_key;
ALTER TABLE patients DROP COLUMN mrn_bidx_next, DROP COLUMN email_bidx_next, DROP COLUMN last_name_bidx_next;
