"""Patient documents: /api/v1/patients/{id}/documents and /api/v1/documents/{id}[/content].

An upload's body IS the file, with its own Content-Type, not a multipart form: werkzeug's
multipart parser spools a large part to an unencrypted temporary file on disk, while a raw body
is read from the request stream 64 KiB at a time straight into the cipher. The file name and the
title may be PHI, so they travel in headers, never in the URL: ``Content-Disposition: attachment;
filename*=UTF-8''…`` (RFC 6266 with RFC 8187's encoding; a plain ``filename="…"`` in ASCII is
read too) and ``Document-Title`` (UTF-8, percent-encoded as RFC 3986 encodes it, e.g. by
JavaScript's ``encodeURIComponent``).
"""
from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote_to_bytes

from flask import g, request
from marshmallow import RAISE, Schema, ValidationError, fields
from werkzeug import Response

from clarity import runtime
from clarity.api import idempotency
from clarity.api.access import roles
from clarity.api.common import (Blueprint, Text, cursor_field, decode_cursor, etag, if_match_version, limit_field,
                                next_link, run)
from clarity.api.limits import expensive
from clarity.api.openapi import if_match
from clarity.errors import BadRequest, ContentTooLarge, Invalid, LengthRequired, UnsupportedMediaType
from clarity.security.access import PHI_ROLES
from clarity.services import documents
from clarity.services.documents import SIGNATURES

blp = Blueprint("documents", __name__, url_prefix="/api/v1",
                description="Patient documents (scans, PDFs, consent forms), kept enciphered")

TITLE_HEADER = "Document-Title"
MAX_TITLE, MAX_FILENAME = 200, 255
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'  # ASCII only: anything else goes in filename*
_PARAM = re.compile(rf";\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})\s*")
_DISPOSITION = re.compile(rf"^\s*{_TOKEN}\s*((?:;\s*{_TOKEN}\s*=\s*(?:{_TOKEN}|{_QUOTED})\s*)*);?\s*$")
_EXT_VALUE = re.compile(r"^UTF-8'[A-Za-z0-9-]*'((?:[!#$&+.^_`|~0-9A-Za-z-]|%[0-9A-Fa-f]{2})*)$", re.IGNORECASE)
_PERCENT_ENCODED = re.compile(r"^(?:[\x20-\x24\x26-\x7e]|%[0-9A-Fa-f]{2})*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_title_field, _filename_field = Text(max_length=MAX_TITLE), Text(max_length=MAX_FILENAME)


def raw_body(view):
    """Mark a view that reads its body itself, as bytes of its own media types (the JSON media
    type check before the view, in clarity.api, passes it by)."""
    view.clarity_raw_body = True
    return view


class DocumentSchema(Schema):
    id = fields.UUID()
    patient_id = fields.UUID()
    title = fields.String(allow_none=True)
    filename = fields.String(allow_none=True)
    content_type = fields.String()
    size_bytes = fields.Integer()
    sha256 = fields.String(metadata={"description": "of the content, hex; the content's ETag"})
    author_id = fields.UUID()
    created_at = fields.DateTime()
    version = fields.Integer(metadata={"description": "the metadata's ETag; send it as If-Match to delete"})


class DocumentListArgs(Schema):
    limit = limit_field(strict=False)
    cursor = cursor_field()


def _binary(description: str) -> dict:
    return {"description": description,
            "content": {kind: {"schema": {"type": "string", "format": "binary"}} for kind in SIGNATURES}}


UPLOAD_DOC = {
    "requestBody": {"required": True, **_binary(
        "The file itself, with its media type (CLARITY_DOCUMENT_TYPES; its first bytes must be of that "
        "type, else 415); at most CLARITY_DOCUMENT_MAX_BYTES (25 MiB by default; 413).")},
    "parameters": [
        {"in": "header", "name": "Content-Disposition", "required": False, "schema": {"type": "string"},
         "description": "The file name (≤ 255 characters, no path): attachment; filename*=UTF-8''<percent-encoded>"},
        {"in": "header", "name": TITLE_HEADER, "required": False, "schema": {"type": "string"},
         "description": "A title (≤ 200 characters): UTF-8, percent-encoded"},
    ],
}
CONTENT_DOC = {
    "parameters": [
        {"in": "header", "name": "Range", "required": False, "schema": {"type": "string"},
         "description": "One byte range (bytes=a-b, bytes=a-, bytes=-n): 206; several: the whole content (200)"},
        {"in": "header", "name": "If-Range", "required": False, "schema": {"type": "string"},
         "description": "The content's ETag: the range applies only while it matches"},
        {"in": "header", "name": "If-None-Match", "required": False, "schema": {"type": "string"},
         "description": "The content's ETag: 304 while it matches"},
    ],
    "responses": {"200": _binary("The whole content"), "206": _binary("The range asked for"),
                  "304": {"description": "Not modified"}},
}


@blp.route("/patients/<uuid:patient_id>/documents", methods=["POST"])
@blp.doc(**UPLOAD_DOC)
@blp.response(201, DocumentSchema)
@roles(*PHI_ROLES)
@expensive
@raw_body
@idempotency.streamed_body(lambda: runtime().settings.document_max_bytes + 1)
def upload_document(patient_id):
    """Upload a document of the patient's (admins, and providers who see the patient); you are
    its author. 415 when the media type is not accepted or the content is not of it, 413 over
    the size limit, 400/422 for a file name or title that cannot be read or is not allowed."""
    settings = runtime().settings
    content_type = request.mimetype
    if content_type not in settings.document_types:
        raise UnsupportedMediaType("Send the file with one of these media types: "
                                   + ", ".join(settings.document_types) + ".")
    if request.content_length is not None and request.content_length > settings.document_max_bytes:
        raise ContentTooLarge(f"The document exceeds {settings.document_max_bytes} bytes.")
    if (request.content_length is None and request.headers.get("Transfer-Encoding")
            and not request.environ.get("wsgi.input_terminated")):
        raise LengthRequired("Send a Content-Length: this server cannot read a chunked body.")
    filename = _filename(request.headers.get("Content-Disposition"))
    title = _title(request.headers.get(TITLE_HEADER))
    # The app-wide 4 MiB bound is for JSON; this stream is bounded here (Body counts what it reads).
    request.max_content_length = settings.document_max_bytes + 1
    body = documents.Body(request.stream.read, settings.document_max_bytes)
    document = run(lambda uow, actor: documents.upload_document(
        uow, actor, patient_id, body, content_type=content_type, filename=filename, title=title))
    idempotency.body_read(bytes.fromhex(document.sha256))  # completes an Idempotency-Key's fingerprint
    return document, 201, {"Location": f"/api/v1/documents/{document.id}", **etag(document.version)}


@blp.route("/patients/<uuid:patient_id>/documents", methods=["GET"])
@blp.arguments(DocumentListArgs, location="query", unknown=RAISE)
@blp.response(200, DocumentSchema(many=True))
@roles(*PHI_ROLES)
def list_documents(args, patient_id):
    """A patient's documents (their metadata), newest first; the next page is in ``Link``."""
    before = decode_cursor(args["cursor"])
    page, next_before = run(lambda uow, actor: documents.list_documents(
        uow, actor, patient_id, before=before, limit=args["limit"]))
    return page, 200, next_link(next_before)


@blp.route("/documents/<uuid:document_id>", methods=["GET"])
@blp.response(200, DocumentSchema)
@roles(*PHI_ROLES)
def get_document(document_id):
    """A document's metadata, with its ``ETag``; 404 when deleted or not your patient's."""
    document = run(lambda uow, actor: documents.get_document(uow, actor, document_id))
    return document, 200, etag(document.version)


@blp.route("/documents/<uuid:document_id>", methods=["DELETE"])
@blp.response(204)
@blp.doc(parameters=[if_match()])
@roles(*PHI_ROLES)
def delete_document(document_id):
    """Delete a document (If-Match: its metadata's ETag; 428 without, 412 when stale); its content
    is purged, its metadata kept for the audit trail, and it answers 404 afterwards."""
    version = if_match_version()
    run(lambda uow, actor: documents.delete_document(uow, actor, document_id, version))


@blp.route("/documents/<uuid:document_id>/content", methods=["GET"])
@blp.doc(**CONTENT_DOC)
@roles(*PHI_ROLES)
def download_document(document_id):
    """The content, as an attachment with its media type, ``ETag`` (its SHA-256) and length;
    one byte range (206), 304 for ``If-None-Match``, 416 for a range past the end."""
    conditions = _conditions()
    head = request.method == "HEAD"
    download, actor = run(lambda uow, actor: (
        documents.start_download(uow, actor, document_id, conditions, head=head), actor))
    document = download.document
    headers = {"ETag": f'"{document.sha256}"', "Accept-Ranges": "bytes", "X-Content-Type-Options": "nosniff"}
    if download.status == 304:
        return Response(status=304, headers=headers)
    headers.update({"Content-Disposition": content_disposition(document.filename),
                    "Content-Length": str(download.stop - download.start),
                    "Content-Security-Policy": "default-src 'none'; sandbox"})
    if download.status == 206:
        headers["Content-Range"] = f"bytes {download.start}-{download.stop - 1}/{document.size_bytes}"
    mimetype = document.content_type + ("; charset=utf-8" if document.content_type == "text/plain" else "")
    content = () if head else documents.stream_content(
        runtime().db, actor, download, request_id=g.request_id, client_addr=request.remote_addr)
    return Response(content, status=download.status, headers=headers, content_type=mimetype,
                    direct_passthrough=True)


def content_disposition(filename: str | None) -> str:
    """``attachment``, with the file name as RFC 6266 has it: an ASCII fallback in ``filename``
    and the name itself, UTF-8 percent-encoded, in ``filename*`` (RFC 8187)."""
    if filename is None:
        return "attachment"
    letters = (c for c in unicodedata.normalize("NFKD", filename) if not unicodedata.combining(c))
    fallback = re.sub(r'[^\x20-\x7e]|["\\%]', "_", "".join(letters)).strip()
    fallback = fallback if re.search(r"[A-Za-z0-9]", fallback) else "document"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _conditions() -> documents.Conditions:
    """The download's conditional and range headers. A malformed Range, or one in other units,
    is ignored (RFC 9110 allows it): the whole content is sent. An If-Range that is not a strong
    entity-tag (a date: no Last-Modified is ever sent; a weak tag) never matches."""
    if_none_match = None
    if "If-None-Match" in request.headers:
        tags = request.if_none_match
        if_none_match = ("*",) if tags.star_tag else tuple(tags.as_set(include_weak=True))
    ranges = request.range
    if_range = request.headers.get("If-Range")
    if if_range is not None:
        match = re.match(r'^\s*"([\x21\x23-\x7e]*)"\s*$', if_range)
        if_range = match.group(1) if match else ""
    return documents.Conditions(
        if_none_match=if_none_match,
        ranges=tuple(ranges.ranges) if ranges is not None and ranges.units == "bytes" else None,
        if_range=if_range)


def _filename(header: str | None) -> str | None:
    """The file name of a Content-Disposition header (``filename*`` before ``filename``); None
    without one. BadRequest when the header cannot be read, Invalid when the name is not allowed."""
    if header is None:
        return None
    match = _DISPOSITION.match(header)
    if match is None:
        raise BadRequest("Content-Disposition is malformed; send attachment; filename*=UTF-8''<name>.",
                         field="Content-Disposition")
    params: dict[str, str] = {}
    for name, value in _PARAM.findall(match.group(1)):
        if name.lower() in params:
            raise BadRequest(f"Content-Disposition repeats {name}.", field="Content-Disposition")
        params[name.lower()] = value
    if "filename*" in params:
        ext = _EXT_VALUE.match(params["filename*"])
        name = _utf8(unquote_to_bytes(ext.group(1)) if ext else None, "Content-Disposition")
    elif "filename" in params:
        value = params["filename"]
        name = re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith('"') else value
    else:
        return None
    if "/" in name or "\\" in name or name in (".", ".."):
        raise Invalid("The file name must be a name, without a path.", field="filename")
    return _valid(_filename_field, name, "filename")


def _title(header: str | None) -> str | None:
    if header is None:
        return None
    if not _PERCENT_ENCODED.match(header):
        raise BadRequest(f"{TITLE_HEADER} must be UTF-8, percent-encoded.", field=TITLE_HEADER)
    return _valid(_title_field, _utf8(unquote_to_bytes(header), TITLE_HEADER), "title")


def _utf8(raw: bytes | None, header: str) -> str:
    try:
        if raw is None:
            raise UnicodeDecodeError("utf-8", b"", 0, 0, "not an RFC 8187 value")
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{header} must carry UTF-8, percent-encoded.", field=header) from None


def _valid(field: Text, value: str, name: str) -> str:
    """``value`` as the field takes text, and on one line: no control character at all."""
    if _CONTROL.search(value):
        raise Invalid(f"{name}: Control characters are not allowed.", field=name)
    try:
        return field.deserialize(value)
    except ValidationError as err:
        raise Invalid(f"{name}: {' '.join(err.messages)}", field=name) from None
