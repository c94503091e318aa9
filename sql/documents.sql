-- name: insert_document^
-- Start a document: its row, before its chunks (whose policy needs it), with the envelope of its
-- title and file name; the upload's last step sets the content's hash and length
-- (update_document_content), in the same transaction. The author is the actor.
-- Params: id, patient_id, meta, key_id, content_type, author_id. Returns: created_at, version.
INSERT INTO documents (id, patient_id, meta, key_id, content_type, size_bytes, author_id)
VALUES (%(id)s, %(patient_id)s, %(meta)s, %(key_id)s, %(content_type)s, 0, %(author_id)s)
RETURNING created_at, version;

-- name: insert_document_chunks!
-- A batch of a document's sealed chunks, sent as one bytea, their concatenation, cut here by
-- each chunk's first byte and length: a bytea[] parameter travels as hex text, which made a
-- 25 MiB upload eight times slower. Params: document_id, packed, indexes, finals, first_bytes,
-- lengths (one element per chunk).
INSERT INTO document_chunks (document_id, index, final, sealed)
SELECT %(document_id)s, v.index, v.final, substring(%(packed)s::bytea FROM v.first_byte FOR v.length)
  FROM unnest(%(indexes)s::integer[], %(finals)s::boolean[], %(first_bytes)s::integer[], %(lengths)s::integer[])
       AS v (index, final, first_byte, length);

-- name: update_document_content!
-- The upload's last step: the envelope with the content's hash, and its length.
-- Params: id, meta, size_bytes.
UPDATE documents
   SET meta = %(meta)s, size_bytes = %(size_bytes)s
 WHERE id = %(id)s AND deleted_at IS NULL;

-- name: get_document^
-- A live document of a live patient the actor sees (their own, an admin's, or under an active
-- emergency grant), with the patient's provider; no row: absent, deleted or out of scope.
-- Params: id, actor_id, actor_is_admin.
-- plan: generic
-- One primary-key probe of each table, whatever the values: nothing to plan per execution.
SELECT d.id, d.patient_id, d.meta, d.key_id, d.content_type, d.size_bytes, d.author_id, d.created_at,
       d.version, p.provider_id
  FROM documents d
  JOIN patients p ON p.id = d.patient_id
 WHERE d.id = %(id)s
   AND d.deleted_at IS NULL
   AND p.deleted_at IS NULL
   AND (%(actor_is_admin)s OR p.provider_id = %(actor_id)s OR clarity_holds_emergency_grant(p.id, %(actor_id)s));

-- name: list_documents
-- One page of a patient's live documents, newest first, after a keyset cursor (null: the first
-- page). The caller has checked that the actor sees the patient (row-level security backs it up).
-- Params: patient_id, before_created_at, before_id, limit.
-- plan: custom
SELECT d.id, d.patient_id, d.meta, d.key_id, d.content_type, d.size_bytes, d.author_id, d.created_at,
       d.version
  FROM documents d
 WHERE d.patient_id = %(patient_id)s
   AND d.deleted_at IS NULL
   AND (%(before_created_at)s::timestamptz IS NULL
        OR (d.created_at, d.id) < (%(before_created_at)s::timestamptz, %(before_id)s::uuid))
 ORDER BY d.created_at DESC, d.id DESC
 LIMIT %(limit)s;

-- name: list_document_chunks
-- A batch of a live document's chunks, from_index to to_index in order, with the document's
-- key id read in the same statement: a rotation committing between two batches is seen whole
-- by each (chunks and key id change together). Row-level security scopes it to the actor.
-- Params: document_id, from_index, to_index, limit.
SELECT c.index, c.final, c.sealed, d.key_id
  FROM document_chunks c
  JOIN documents d ON d.id = c.document_id
 WHERE c.document_id = %(document_id)s
   AND c.index BETWEEN %(from_index)s AND %(to_index)s
   AND d.deleted_at IS NULL
 ORDER BY c.index
 LIMIT %(limit)s;

-- name: delete_document!
-- Soft-delete a live document the actor sees when its version matches; the row stays for the
-- audit trail, its chunks go (delete_document_chunks). Params: id, version, actor_id, actor_is_admin.
-- plan: generic
-- One primary-key probe of each table, whatever the values: nothing to plan per execution.
UPDATE documents d
   SET deleted_at = now(), deleted_by = %(actor_id)s, version = d.version + 1
  FROM patients p
 WHERE d.id = %(id)s
   AND d.version = %(version)s
   AND d.deleted_at IS NULL
   AND p.id = d.patient_id
   AND (%(actor_is_admin)s OR p.provider_id = %(actor_id)s OR clarity_holds_emergency_grant(p.id, %(actor_id)s));

-- name: delete_document_chunks!
-- Purge a deleted document's content (the policy allows nothing else). Params: document_id.
DELETE FROM document_chunks WHERE document_id = %(document_id)s;

-- name: count_documents_not_under_key$
-- How many documents (deleted ones too) are enciphered under another key. Params: key_id.
SELECT count(*) FROM documents WHERE key_id <> %(key_id)s;

-- name: lock_document_not_under_key^
-- The next document (deleted ones too) under another key after after_id (null: the first), for
-- rotation, locked so that a deletion purging its chunks waits for the re-encipherment.
-- Params: key_id, after_id. Returns: id, meta, key_id.
-- plan: custom
SELECT id, meta, key_id
  FROM documents
 WHERE key_id <> %(key_id)s
   AND (%(after_id)s::uuid IS NULL OR id > %(after_id)s::uuid)
 ORDER BY id
 LIMIT 1
   FOR NO KEY UPDATE;

-- name: update_document_chunks!
-- Store a batch of re-enciphered chunks, packed as insert_document_chunks sends them.
-- Params: document_id, packed, indexes, first_bytes, lengths.
UPDATE document_chunks c
   SET sealed = substring(%(packed)s::bytea FROM v.first_byte FOR v.length)
  FROM unnest(%(indexes)s::integer[], %(first_bytes)s::integer[], %(lengths)s::integer[])
       AS v (index, first_byte, length)
 WHERE c.document_id = %(document_id)s AND c.index = v.index;

-- name: update_document_key!
-- The re-encipherment's last step: the envelope under the new key, and the key id of the
-- envelope and the chunks. Params: id, old_key_id, meta, key_id.
UPDATE documents
   SET meta = %(meta)s, key_id = %(key_id)s
 WHERE id = %(id)s AND key_id = %(old_key_id)s;
