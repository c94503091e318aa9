-- Blind-index key rotation: while a next blind-index key is configured every write also fills
-- the *_next columns, `keys rebuild-index` fills them for older rows, and after the next key
-- is promoted `keys switch-index` moves them into the main columns. Lookups match both.
SET LOCAL lock_timeout = '5s';

ALTER TABLE patients
    ADD COLUMN mrn_bidx_next bytea CONSTRAINT patients_mrn_bidx_next_check CHECK (octet_length(mrn_bidx_next) = 32),
    ADD COLUMN email_bidx_next bytea CONSTRAINT patients_email_bidx_next_check CHECK (octet_length(email_bidx_next) = 32),
    ADD COLUMN last_name_bidx_next bytea CONSTRAINT patients_last_name_bidx_next_check CHECK (octet_length(last_name_bidx_next) = 32);

-- MRNs stay unique throughout: the main column holds one key's indexes before the promotion,
-- and coalesce(next, main) holds the new key's from the end of the rebuild to the switch.
CREATE UNIQUE INDEX patients_mrn_bidx_rotating_key ON patients ((coalesce(mrn_bidx_next, mrn_bidx)))
    WHERE deleted_at IS NULL;
CREATE INDEX patients_mrn_bidx_next_idx ON patients (mrn_bidx_next) WHERE mrn_bidx_next IS NOT NULL;
CREATE INDEX patients_email_bidx_next_idx ON patients (email_bidx_next) WHERE email_bidx_next IS NOT NULL;
CREATE INDEX patients_last_name_bidx_next_idx ON patients (last_name_bidx_next) WHERE last_name_bidx_next IS NOT NULL;
