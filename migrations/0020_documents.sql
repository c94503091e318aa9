-- Patient documents (scans, PDFs, consent forms): a metadata row, and the content in enciphered
-- chunks of 64 KiB (clarity/security/chunks.py).
--
-- documents.meta is an AES-256-GCM envelope (as patients.phi) bound to documents.meta:<id>,
-- holding the title, the file name and the SHA-256 of the content: a file's hash in the clear
-- would confirm a guess of the whole file (a hospital's standard consent form) and link
-- identical files across patients. key_id names the data key of the envelope and of the
-- chunks' per-document subkey; data-key rotation rewrites both in one transaction.
--
-- A deleted document keeps its row (404 to every read, the audit trail names it) and loses its
-- chunks in the same transaction: the usual reason to delete one is a scan filed under the
-- wrong patient, whose content must not stay.
SET LOCAL lock_timeout = '5s';

CREATE TABLE documents (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    patient_id   uuid NOT NULL CONSTRAINT documents_patient_id_fkey REFERENCES patients (id),
    -- nonce (12) + ciphertext + tag (16) of {title, filename, sha256}; titles and names are
    -- bounded far below the upper bound by the API.
    meta         bytea NOT NULL CONSTRAINT documents_meta_check CHECK (octet_length(meta) BETWEEN 29 AND 8192),
    key_id       text NOT NULL,
    content_type text NOT NULL CONSTRAINT documents_content_type_check
                 CHECK (content_type ~ '^[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*$'),
    size_bytes   bigint NOT NULL CONSTRAINT documents_size_bytes_check CHECK (size_bytes >= 0),
    author_id    uuid NOT NULL CONSTRAINT documents_author_id_fkey REFERENCES users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    deleted_by   uuid CONSTRAINT documents_deleted_by_fkey REFERENCES users (id),
    version      integer NOT NULL DEFAULT 1,
    CONSTRAINT documents_deleted_check CHECK ((deleted_at IS NULL) = (deleted_by IS NULL))
);
-- GET /patients/{id}/documents: a patient's live documents, newest first.
CREATE INDEX documents_patient_id_created_at_id_idx ON documents (patient_id, created_at, id)
    WHERE deleted_at IS NULL;
-- Data-key rotation finds the documents under an old key.
CREATE INDEX documents_key_id_idx ON documents (key_id);

-- One row per 64 KiB of content: index 0..n-1, only the last one final (an empty document is
-- one empty final chunk). sealed is nonce (12) + ciphertext + tag (16).
CREATE TABLE document_chunks (
    document_id uuid NOT NULL CONSTRAINT document_chunks_document_id_fkey REFERENCES documents (id),
    index       integer NOT NULL CONSTRAINT document_chunks_index_check CHECK (index >= 0),
    final       boolean NOT NULL,
    sealed      bytea NOT NULL
                CONSTRAINT document_chunks_sealed_check CHECK (octet_length(sealed) BETWEEN 28 AND 65564),
    CONSTRAINT document_chunks_pkey PRIMARY KEY (document_id, index)
);
-- Ciphertext does not compress: store it out of line without trying (TOAST's EXTERNAL).
ALTER TABLE document_chunks ALTER COLUMN sealed SET STORAGE EXTERNAL;

GRANT SELECT, INSERT ON documents TO clarity_app;
-- meta and size_bytes: the upload's last step (the content's hash and length); deleted_*,
-- version: soft delete; meta and key_id: data-key rotation.
GRANT UPDATE (meta, size_bytes, key_id, deleted_at, deleted_by, version) ON documents TO clarity_app;
GRANT SELECT, INSERT, DELETE ON document_chunks TO clarity_app;
GRANT UPDATE (sealed) ON document_chunks TO clarity_app;

-- Row-level security, behind the WHERE clauses of sql/documents.sql: a document is visible when
-- its patient is (the patients policies decide: an admin all, a provider their own and those
-- under an active emergency grant, anyone else none); its chunks when it is.
ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE documents FORCE ROW LEVEL SECURITY;

CREATE POLICY documents_select ON documents FOR SELECT
    USING (EXISTS (SELECT 1 FROM patients p WHERE p.id = documents.patient_id));

CREATE POLICY documents_insert ON documents FOR INSERT
    WITH CHECK (author_id = clarity_actor_id()
                AND EXISTS (SELECT 1 FROM patients p WHERE p.id = documents.patient_id));

CREATE POLICY documents_update ON documents FOR UPDATE
    USING (EXISTS (SELECT 1 FROM patients p WHERE p.id = documents.patient_id))
    WITH CHECK (EXISTS (SELECT 1 FROM patients p WHERE p.id = documents.patient_id));

ALTER TABLE document_chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE document_chunks FORCE ROW LEVEL SECURITY;

CREATE POLICY document_chunks_select ON document_chunks FOR SELECT
    USING (EXISTS (SELECT 1 FROM documents d WHERE d.id = document_chunks.document_id));

-- Only the uploader, into a live document, in the upload's own transaction.
CREATE POLICY document_chunks_insert ON document_chunks FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM documents d
                         WHERE d.id = document_chunks.document_id
                           AND d.author_id = clarity_actor_id() AND d.deleted_at IS NULL));

-- Re-enciphering (data-key rotation) runs as an admin's transaction (the maintenance actor).
CREATE POLICY document_chunks_reencrypt ON document_chunks FOR UPDATE
    USING (clarity_actor_role() = 'admin')
    WITH CHECK (clarity_actor_role() = 'admin');

-- Chunks are removed only with their document's deletion.
CREATE POLICY document_chunks_delete ON document_chunks FOR DELETE
    USING (EXISTS (SELECT 1 FROM documents d
                    WHERE d.id = document_chunks.document_id AND d.deleted_at IS NOT NULL));
