"""Patient documents: a metadata row whose title, file name and content hash are one envelope,
and the content in sealed chunks (clarity.security.chunks), written and read a batch at a time
so that a worker never holds a whole document."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import uuid
from collections.abc import Iterable, Iterator

from psycopg.rows import dict_row

from clarity.errors import DecryptionError
from clarity.security.chunks import last_index, chunk_length, with_final_flag

TABLE, META_COLUMN = "documents", "meta"
# Chunks per statement, written or read: 1 MiB of content.
BATCH_CHUNKS = 16
MAX_INDEX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Document:
    id: uuid.UUID
    patient_id: uuid.UUID
    title: str | None
    filename: str | None
    content_type: str
    size_bytes: int
    sha256: str  # hex, of the content
    author_id: uuid.UUID
    created_at: dt.datetime
    version: int
    provider_id: uuid.UUID | None = None  # the patient's, where the query read it (emergency audit)


class DocumentRepository:
    def __init__(self, conn, queries, keyring):
        self.conn = conn
        self.q = queries
        self.keyring = keyring

    def add(self, *, patient_id, content_type: str, filename, title, author_id, pieces: Iterable[bytes]) -> Document:
        """Store a document whose content is ``pieces`` (CHUNK_BYTES each, the last one
        shorter), sealing and writing them a batch at a time as they come; whatever ``pieces``
        raises (a body over the limit) leaves nothing behind (the unit of work rolls back)."""
        document_id = uuid.uuid4()
        cipher, key_id = self.keyring.chunk_cipher(document_id)
        meta = {"title": title, "filename": filename}
        row = self.q.insert_document.one(self.conn, {
            "id": document_id, "patient_id": patient_id, "meta": self._seal(document_id, meta),
            "key_id": key_id, "content_type": content_type, "author_id": author_id}, dict_row)
        digest, size, batch = hashlib.sha256(), 0, []
        for index, final, piece in with_final_flag(pieces):
            digest.update(piece)
            size += len(piece)
            batch.append((index, final, cipher.seal(index, final, piece)))
            if len(batch) == BATCH_CHUNKS or final:
                self._insert_chunks(document_id, batch)
                batch = []
        sha256 = digest.hexdigest()
        self.q.update_document_content.rowcount(self.conn, {
            "id": document_id, "meta": self._seal(document_id, {**meta, "sha256": sha256}), "size_bytes": size})
        return Document(id=document_id, patient_id=patient_id, title=title, filename=filename,
                        content_type=content_type, size_bytes=size, sha256=sha256, author_id=author_id,
                        created_at=row["created_at"], version=row["version"])

    def get(self, document_id, actor) -> Document | None:
        """The live document if the actor sees its live patient (with ``provider_id``); else None."""
        row = self.q.get_document.one(self.conn, {"id": document_id, **actor.scope()}, dict_row)
        return None if row is None else document_from_row(self.keyring, row)

    def list(self, patient_id, *, before=None, limit=50) -> list[Document]:
        """A keyset page of the patient's live documents, newest first, before the position
        ``before`` (created_at, id). The caller checks the patient is the actor's."""
        before_created_at, before_id = before or (None, None)
        rows = self.q.list_documents.all(self.conn, {
            "patient_id": patient_id, "before_created_at": before_created_at, "before_id": before_id,
            "limit": limit}, dict_row)
        return [document_from_row(self.keyring, row) for row in rows]

    def delete(self, document_id, version: int, actor) -> bool:
        """Soft-delete when ``version`` matches, and purge the content; False when it does not."""
        if self.q.delete_document.rowcount(self.conn, {"id": document_id, "version": version, **actor.scope()}) != 1:
            return False
        self.q.delete_document_chunks.rowcount(self.conn, {"document_id": document_id})
        return True

    def read_content(self, document_id, size: int, first: int, last: int | None) -> Iterator[tuple[int, bytes]]:
        """``(index, plaintext)`` of the chunks ``first`` to ``last`` (None: to the end, and
        nothing after it) of a live document of ``size`` bytes, a batch at a time, each chunk
        authenticated before it is yielded.

        Raises DecryptionError, before yielding anything of the chunk at fault, when a chunk fails
        authentication, or the chunks are not exactly the document's (one missing, added after the
        final one, or of the wrong length)."""
        final_index = last_index(size)
        to_index = MAX_INDEX if last is None else last
        expected, ciphers = first, {}
        while True:
            rows = self.q.list_document_chunks.all(self.conn, {
                "document_id": document_id, "from_index": expected, "to_index": to_index,
                "limit": BATCH_CHUNKS}, dict_row)
            for row in rows:
                if row["index"] != expected or row["index"] > final_index:
                    raise DecryptionError(f"document {document_id}: chunk {expected} is missing or one was added")
                cipher = ciphers.get(row["key_id"])
                if cipher is None:
                    cipher = ciphers[row["key_id"]] = self.keyring.chunk_cipher(document_id, row["key_id"])[0]
                plaintext = cipher.open(row["index"], row["final"], row["sealed"])
                if row["final"] != (row["index"] == final_index) or len(plaintext) != chunk_length(size, row["index"]):
                    raise DecryptionError(f"document {document_id}: chunk {expected} does not fit its length")
                yield expected, plaintext
                expected += 1
            if len(rows) < BATCH_CHUNKS:
                break
        if expected <= min(to_index, final_index):
            raise DecryptionError(f"document {document_id}: chunk {expected} is missing")

    def count_not_under_active_key(self) -> int:
        return self.q.count_documents_not_under_key.value(self.conn, {"key_id": self.keyring.active_key_id})

    def reencrypt_batch(self, *, after_id=None, limit: int = 1) -> tuple[list, list, object]:
        """Re-encipher the next document not under the active key after ``after_id``: its
        envelope and every chunk, a batch of chunks at a time, then its key id. A document is a
        unit of its own, whatever ``limit``: its chunks and key id change together or not at all.
        Returns (rotated ids, ids that failed to decrypt, the id processed or None when none is left)."""
        row = self.q.lock_document_not_under_key.one(self.conn, {
            "key_id": self.keyring.active_key_id, "after_id": after_id}, dict_row)
        if row is None:
            return [], [], None
        try:
            with self.conn.transaction():  # a savepoint: a chunk that fails leaves the document as it was
                self._reencrypt(row)
        except DecryptionError:
            return [], [row["id"]], row["id"]
        return [row["id"]], [], row["id"]

    def _reencrypt(self, row) -> None:
        document_id, old_key_id = row["id"], row["key_id"]
        meta = self.keyring.decrypt(TABLE, META_COLUMN, document_id, row["meta"], old_key_id)
        old, _ = self.keyring.chunk_cipher(document_id, old_key_id)
        new, key_id = self.keyring.chunk_cipher(document_id)
        after = 0
        while True:
            rows = self.q.list_document_chunks.all(self.conn, {
                "document_id": document_id, "from_index": after, "to_index": MAX_INDEX, "limit": BATCH_CHUNKS},
                dict_row)
            if rows:
                sealed = [new.seal(r["index"], r["final"], old.open(r["index"], r["final"], r["sealed"])) for r in rows]
                self.q.update_document_chunks.rowcount(self.conn, {
                    "document_id": document_id, "indexes": [r["index"] for r in rows], **_packed(sealed)})
                after = rows[-1]["index"] + 1
            if len(rows) < BATCH_CHUNKS:
                break
        self.q.update_document_key.rowcount(self.conn, {
            "id": document_id, "old_key_id": old_key_id, "meta": self._seal(document_id, meta), "key_id": key_id})

    def _insert_chunks(self, document_id, batch) -> None:
        self.q.insert_document_chunks.rowcount(self.conn, {
            "document_id": document_id, "indexes": [index for index, _, _ in batch],
            "finals": [final for _, final, _ in batch], **_packed([sealed for _, _, sealed in batch])})

    def _seal(self, document_id, meta: dict) -> bytes:
        return self.keyring.encrypt(TABLE, META_COLUMN, document_id, meta)[0]


def document_from_row(keyring, row) -> Document:
    """A documents row (a dict) as a Document, its envelope opened (``provider_id`` when the
    row has it)."""
    meta = keyring.decrypt(TABLE, META_COLUMN, row["id"], row["meta"], row["key_id"])
    return Document(id=row["id"], patient_id=row["patient_id"], title=meta["title"], filename=meta["filename"],
                    content_type=row["content_type"], size_bytes=row["size_bytes"], sha256=meta["sha256"],
                    author_id=row["author_id"], created_at=row["created_at"], version=row["version"],
                    provider_id=row.get("provider_id"))


def _packed(sealed: list[bytes]) -> dict:
    """Sealed chunks as one bytea parameter (sent in binary) with each one's first byte (from 1)
    and length, for the statements that cut them apart (sql/documents.sql)."""
    lengths = [len(chunk) for chunk in sealed]
    first_bytes = list(itertools.accumulate(lengths, initial=1))[:-1]
    return {"packed": b"".join(sealed), "first_bytes": first_bytes, "lengths": lengths}
