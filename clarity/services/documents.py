"""Patient documents: upload (streamed into the cipher), list, metadata, download (streamed out of
it, byte ranges too), soft delete.

The content never sits whole in a worker: an upload is read, checked, sealed and written 64 KiB
at a time, and a download read, opened and sent the same way, each chunk authenticated before a
byte of it leaves. Every access is audited before the role and scope checks, so denials leave a
trace too; events name fields, never values. A download's event commits before its first byte is
sent: the content is read afterwards, in a unit of work of its own with the actor's context.
"""
from __future__ import annotations

import codecs
import dataclasses
import hashlib
import itertools
import logging
from collections.abc import Callable, Iterator

from clarity.audit import CREATE, DELETE, READ, AuditEvent
from clarity.errors import (ContentTooLarge, DecryptionError, Forbidden, NotFound, PreconditionFailed,
                            RangeNotSatisfiable, Unavailable, UnsupportedMediaType)
from clarity.pagination import keyset, page
from clarity.security.access import PHI_ROLES, Actor, require_role
from clarity.security.chunks import CHUNK_BYTES, last_index
from clarity.services.patient_access import mark_emergency, require_patient

log = logging.getLogger(__name__)

ENTITY = "document"
STALE = "The document changed since you read it; read it again."
DICOM_PREAMBLE = 128


def _is_utf8_text(head: bytes, whole: bool) -> bool:
    """UTF-8 without NUL; a character cut at the end of a first block that is not the whole
    content is allowed (its rest is in the next block)."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


# The media types an upload may declare, each with the check its first block (up to CHUNK_BYTES,
# or the whole content when shorter) must pass: the declared type has to be what the bytes are.
SIGNATURES: dict[str, Callable[[bytes, bool], bool]] = {
    "application/pdf": lambda head, whole: head.startswith(b"%PDF-"),
    "image/png": lambda head, whole: head.startswith(b"\x89PNG\r\n\x1a\n"),
    "image/jpeg": lambda head, whole: head.startswith(b"\xff\xd8\xff"),
    "image/tiff": lambda head, whole: head.startswith((b"II*\x00", b"MM\x00*")),
    "application/dicom": lambda head, whole: head[DICOM_PREAMBLE:DICOM_PREAMBLE + 4] == b"DICM",
    "text/plain": _is_utf8_text,
}


class Body:
    """An upload's bytes, read once from ``read`` (a file's ``read(n)``) in pieces of exactly
    CHUNK_BYTES (the last one shorter), refusing more than ``limit`` bytes with ContentTooLarge
    as soon as the stream runs over, whether or not a Content-Length announced it."""

    def __init__(self, read: Callable[[int], bytes], limit: int):
        self._read = read
        self.limit = limit
        self.started = False

    def pieces(self) -> Iterator[bytes]:
        """The pieces; Unavailable when they were read already (a unit of work retried after a
        serialization failure cannot read the request again: the client retries)."""
        if self.started:
            raise Unavailable("The upload could not be stored; send it again.")
        self.started = True
        return self._pieces()

    def _pieces(self) -> Iterator[bytes]:
        total = 0
        while True:
            piece = bytearray()
            while len(piece) < CHUNK_BYTES:
                data = self._read(min(CHUNK_BYTES - len(piece), self.limit + 1 - total))
                if not data:
                    break
                piece += data
                total += len(data)
                if total > self.limit:
                    raise ContentTooLarge(f"The document exceeds {self.limit} bytes.")
            if piece:
                yield bytes(piece)
            if len(piece) < CHUNK_BYTES:
                return


def upload_document(uow, actor: Actor, patient_id, body: Body, *, content_type: str, filename: str | None,
                    title: str | None):
    """Store a document of the patient's, written by the actor; returns the Document (its
    ``sha256`` is the body's fingerprint: clarity.api.idempotency.body_read).

    Raises UnsupportedMediaType (the first bytes are not ``content_type``), ContentTooLarge,
    Forbidden (role), NotFound (patient absent or not the actor's); nothing is stored then."""
    named = tuple(name for name, value in (("filename", filename), ("title", title)) if value is not None)
    event = AuditEvent(CREATE, "document.create", ENTITY, patient_id=patient_id, fields=("content", *named))
    uow.audit(event)
    require_role(actor, *PHI_ROLES)
    pieces = body.pieces()
    first = next(pieces, b"")
    if not SIGNATURES[content_type](first, len(first) < CHUNK_BYTES):
        raise UnsupportedMediaType(f"The content is not {content_type}.")
    require_patient(uow, actor, patient_id, event)
    document = uow.documents.add(patient_id=patient_id, content_type=content_type, filename=filename, title=title,
                                 author_id=actor.id, pieces=itertools.chain([first], pieces))
    event.entity_id = document.id
    return document


def list_documents(uow, actor: Actor, patient_id, *, before=None, limit: int = 50):
    """A keyset page of the patient's live documents, newest first: ``(documents, next_before)``."""
    event = AuditEvent(READ, "document.list", ENTITY, patient_id=patient_id)
    uow.audit(event)
    access = require_patient(uow, actor, patient_id, event)
    rows = uow.documents.list(patient_id, before=before, limit=limit + 1)
    items, next_before = page(rows, limit, keyset("created_at", "id"))
    for document in items:
        read = AuditEvent(READ, "document.read", ENTITY, document.id, patient_id, fields=_fields(document))
        mark_emergency(read, actor, access["provider_id"])
        uow.audit(read)
    return items, next_before


def get_document(uow, actor: Actor, document_id):
    """A live document's metadata; NotFound when it does not exist, was deleted, or its patient
    is not the actor's."""
    event = AuditEvent(READ, "document.read", ENTITY, document_id)
    document = _read(uow, actor, event)
    event.fields = _fields(document)
    return document


def delete_document(uow, actor: Actor, document_id, version: int) -> None:
    """Soft-delete a document whose version is ``version`` and purge its content; afterwards it
    answers 404. PreconditionFailed when stale; Forbidden under an emergency grant (a grant is
    for treating the patient, not for removing their documents), audited as a denied attempt."""
    event = AuditEvent(DELETE, "document.delete", ENTITY, document_id)
    uow.audit(event)
    require_role(actor, *PHI_ROLES)
    current = uow.documents.get(document_id, actor)
    if current is None:
        raise NotFound("No such document.")
    event.patient_id = current.patient_id
    if mark_emergency(event, actor, current.provider_id):
        raise Forbidden("Emergency access does not allow deleting a document.")
    if current.version != version or not uow.documents.delete(document_id, version, actor):
        raise PreconditionFailed(STALE)


@dataclasses.dataclass(frozen=True)
class Conditions:
    """What a download asks for, as the request's headers say it: ``if_none_match`` the
    entity-tags of If-None-Match (``("*",)`` for any; None without the header), ``ranges`` the
    ``(start, stop)`` pairs of a bytes Range (stop exclusive or None: to the end; a negative start
    and no stop: that many last bytes), ``if_range`` the strong entity-tag of If-Range ("" for a
    validator that never matches: a date or a weak tag; None without the header)."""

    if_none_match: tuple[str, ...] | None = None
    ranges: tuple[tuple[int, int | None], ...] | None = None
    if_range: str | None = None


@dataclasses.dataclass(frozen=True)
class Download:
    """The answer to a download: the document, and which bytes to send (``status`` 200 all,
    206 ``[start, stop)``, 304 none)."""

    document: object
    status: int
    start: int = 0
    stop: int = 0

    @property
    def whole(self) -> bool:
        return self.status == 200


def plan_download(document, conditions: Conditions) -> Download:
    """Which bytes a download gets (RFC 9110): 304 when If-None-Match names the content's tag
    (its SHA-256) or ``*``; 206 for one satisfiable byte range (honoured only while If-Range,
    when sent, matches); the whole content (200) without a range, with several ranges, or when
    If-Range does not match. RangeNotSatisfiable (416) when a single range starts past the end."""
    size = document.size_bytes
    if conditions.if_none_match is not None and ({"*", document.sha256} & set(conditions.if_none_match)):
        return Download(document, 304)
    ranges = conditions.ranges
    if not ranges or len(ranges) != 1 or conditions.if_range not in (None, document.sha256):
        return Download(document, 200, 0, size)
    start, stop = ranges[0]
    if start < 0:  # the last -start bytes
        if size == 0:
            raise RangeNotSatisfiable(size=size)
        return Download(document, 206, max(0, size + start), size)
    if start >= size:
        raise RangeNotSatisfiable(size=size)
    return Download(document, 206, start, size if stop is None else min(stop, size))


def start_download(uow, actor: Actor, document_id, conditions: Conditions, *, head: bool = False) -> Download:
    """Audit a download of a live document the actor sees and plan it (plan_download); the event
    commits with this unit, before stream_content sends a byte, and names the content only when
    some is sent. NotFound as get_document; RangeNotSatisfiable (audited as a failure). ``head``:
    a HEAD request, whose answer carries no content."""
    event = AuditEvent(READ, "document.download", ENTITY, document_id)
    download = plan_download(_read(uow, actor, event), conditions)
    if download.status != 304 and not head:
        event.fields = ("content",)
    return download


def stream_content(db, actor: Actor, download: Download, *, request_id=None, client_addr=None) -> Iterator[bytes]:
    """The bytes ``download`` sends, read a batch of chunks at a time in a unit of work of its
    own, with the actor's context (row-level security applies), each chunk authenticated before
    any byte of it is yielded. A whole download holds its last chunk back until the content's
    SHA-256 matches the document's.

    When a chunk fails (altered, moved, missing, added), nothing more is sent: the failure is
    logged (ids only) and DownloadCut raised, so the server cuts the connection and the client
    sees a body shorter than its Content-Length, never altered bytes."""
    document = download.document
    first = download.start // CHUNK_BYTES
    last = None if download.whole else max(first, (download.stop - 1) // CHUNK_BYTES)
    try:
        with db.connection() as conn, db.unit_of_work(conn, actor=actor, request_id=request_id,
                                                      client_addr=client_addr) as uow:
            pieces = uow.documents.read_content(document.id, document.size_bytes, first, last)
            yield from (_whole if download.whole else _ranged)(pieces, download)
    except DecryptionError as exc:
        log.error("document content failed its check; the download was cut (request %s): %s", request_id, exc)
        raise DownloadCut(str(exc)) from None


class DownloadCut(Exception):
    """A download stopped part-way because its content failed authentication."""


def _whole(pieces, download: Download) -> Iterator[bytes]:
    """Every chunk as it is opened but the final one, sent once the whole content's SHA-256 is
    the document's: a client never gets a complete body that is not the one uploaded."""
    document = download.document
    digest, final, held = hashlib.sha256(), last_index(document.size_bytes), b""
    for index, plaintext in pieces:
        digest.update(plaintext)
        if index == final:
            held = plaintext
        else:
            yield plaintext
    if digest.hexdigest() != document.sha256:
        raise DecryptionError(f"document {document.id}: the content does not match its SHA-256")
    if held:
        yield held


def _ranged(pieces, download: Download) -> Iterator[bytes]:
    for index, plaintext in pieces:
        offset = index * CHUNK_BYTES
        piece = plaintext[max(0, download.start - offset):download.stop - offset]
        if piece:
            yield piece


def _read(uow, actor: Actor, event: AuditEvent):
    """The live document ``event`` names, if the actor sees it (NotFound otherwise), with the
    event audited and marked as emergency access where only a grant allows it."""
    uow.audit(event)
    require_role(actor, *PHI_ROLES)
    document = uow.documents.get(event.entity_id, actor)
    if document is None:
        raise NotFound("No such document.")
    mark_emergency(event, actor, document.provider_id)
    event.patient_id = document.patient_id
    return document


def _fields(document) -> tuple[str, ...]:
    """The fields a metadata read shows: the enciphered ones it holds, never their values."""
    return tuple(name for name in ("title", "filename") if getattr(document, name) is not None) + ("sha256",)
