"""What every resource shares: the blueprint, safe text and timestamp fields, ETags, cursors,
the app's runtime (settings, database, ...), and running a unit of work."""
from __future__ import annotations

import datetime as dt
import re
from urllib.parse import urlencode

import flask_smorest
from flask import current_app, g, request
from flask_smorest.utils import resolve_schema_instance
from marshmallow import ValidationError, fields, validate

from clarity.api import body, cursors, dumps
from clarity.errors import BadRequest, PreconditionRequired, Unavailable
from clarity import runtime
from clarity.services import auth

MAX_LIMIT = 200
# A readings cursor holds a source device of up to 200 characters (up to 4 UTF-8 bytes each).
MAX_CURSOR_LENGTH = 2048
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ETAG = re.compile(r'^"(\d{1,9})"$')
# RFC 9110 If-Match: "*" or a list of entity-tags (opaque, visible ASCII but the quote).
ENTITY_TAGS = re.compile(r'^\s*(\*|(W/)?"[\x21\x23-\x7e]*"(\s*,\s*(W/)?"[\x21\x23-\x7e]*")*)\s*$')
UNMATCHABLE_VERSION = -1
_NO_CONTROL_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]*$"
OFFSET_REQUIRED = ("Give the time with an offset, such as 2030-05-01T09:00:00Z "
                   "(in a query string, write Z or encode + as %2B).")


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, reading JSON bodies with the safe loader (clarity.api.body)
    and writing responses with each schema's compiled dump (clarity.api.dumps)."""

    ARGUMENTS_PARSER = body.Parser()

    def arguments(self, schema, *args, **kwargs):
        # An instance, built once: given a class, webargs builds a new schema (deep-copying its
        # fields, nested ones too) for every request, about a fifth of a POST's CPU.
        return super().arguments(resolve_schema_instance(schema), *args, **kwargs)

    def response(self, status_code, schema=None, **kwargs):
        if schema is not None:
            schema = resolve_schema_instance(schema)
            marshmallow_dump, fast_dump = schema.dump, dumps.compile_dump(schema)

            def dump(obj):
                written = fast_dump(obj)
                if current_app.config.get("CLARITY_CHECK_DUMPS"):
                    as_json = current_app.json.dumps
                    if as_json(written) != as_json(marshmallow_dump(obj)):
                        raise AssertionError(f"{type(schema).__name__}: the compiled dump differs from marshmallow's")
                return written

            schema.dump = dump
        return super().response(status_code, schema, **kwargs)


def _length(min_length, max_length):
    return validate.Length(min=min_length, max=max_length)


class Text(fields.String):
    """A string with a length limit that refuses NUL and other control characters."""

    def __init__(self, max_length: int = 200, min_length: int = 1, validate=None, **kwargs):
        validators = [_length(min_length, max_length)] + ([validate] if validate else [])
        if not isinstance(validate, fields.validate.Regexp):  # else that pattern is documented
            kwargs["metadata"] = {"pattern": _NO_CONTROL_PATTERN, **kwargs.get("metadata", {})}
        super().__init__(validate=validators, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if _CONTROL.search(text):
            raise ValidationError("Control characters are not allowed.")
        return text


def parse_timestamp(text) -> dt.datetime | None:
    """The instant an ISO 8601 time with an offset names (``2030-05-01T09:00:00Z``), or None
    when ``text`` is not one. A time without an offset is None too: it means a different
    instant in every time zone, and guessing one (the server's, or UTC) would silently shift a
    clinical time, so the whole API refuses it."""
    if type(text) is not str:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


class Timestamp(fields.AwareDateTime):
    """A time with an offset (parse_timestamp); anything else is 422 naming the field."""

    default_error_messages = {"invalid": OFFSET_REQUIRED}

    def _deserialize(self, value, attr, data, **kwargs) -> dt.datetime:
        moment = parse_timestamp(value)
        if moment is None:
            raise self.make_error("invalid")
        return moment


def timestamp_field(data_key: str | None = None, **kwargs) -> Timestamp:
    """The field of every time a client sends, in a body or a query string (``from``/``to``):
    one rule for the whole API, a time with an offset (parse_timestamp)."""
    return Timestamp(data_key=data_key, **kwargs)


def limit_field(strict: bool = True):
    """Page size, 1..200 (default 50). ``strict=False`` for query strings, where it is text."""
    return fields.Integer(strict=strict, load_default=50, validate=validate.Range(min=1, max=MAX_LIMIT))


def cursor_field():
    return Text(max_length=MAX_CURSOR_LENGTH, load_default=None, metadata={
        "pattern": "^[A-Za-z0-9_-]+$",
        "description": "Opaque: the cursor of the previous page (its Link header or next_cursor); "
                       "any other value is 400."})


def decode_cursor(cursor: str | None) -> tuple | None:
    """The keyset position in a cursor this list issued (None when there is none: the first
    page). BadRequest when it is malformed, altered, or from another list (or another
    patient's); Unavailable while no keys are configured to check it."""
    if cursor is None:
        return None
    try:
        return cursors.decode(cursor, **_this_list())
    except cursors.InvalidCursor:
        raise BadRequest("The cursor is invalid; use the one from the previous page.") from None


def encode_cursor(position: tuple | None) -> str | None:
    """The opaque cursor of a keyset position for this request's list (a body's
    ``next_cursor``), or None on the last page."""
    return None if position is None else cursors.encode(position, **_this_list())


def next_link(position: tuple | None, args: dict | None = None) -> dict:
    """A ``Link: <…>; rel="next"`` header for a GET list continuing after ``position``, or none
    on the last page. The next page repeats this request's query, ``args`` overriding it (a
    window the first page defaulted to, so later pages keep it)."""
    cursor = encode_cursor(position)
    if cursor is None:
        return {}
    query = {**request.args.to_dict(), **(args or {}), "cursor": cursor}
    # Encoded: a timestamp filter's "+00:00" would otherwise come back as a space.
    return {"Link": f'<{request.path}?{urlencode(query)}>; rel="next"'}


def _this_list() -> dict:
    """What binds a cursor to the list serving this request: its endpoint and path arguments,
    and the keyring whose blind-index root signs cursors."""
    keyring = runtime().db.keyring
    if keyring is None:
        raise Unavailable("Encryption keys are not configured.", retry_after=60)
    return {"keyring": keyring, "endpoint": request.endpoint, "path_args": request.view_args}


def etag(version: int) -> dict:
    return {"ETag": f'"{version}"'}


def if_match_version() -> int:
    """The version a PATCH/PUT/DELETE was based on, from If-Match: 428 when missing, 400 when
    it is not an entity-tag at all. A well-formed tag this API did not issue (weak, ``*``, a
    foreign value) gives a version no row has, so the service answers 412 once it has found the
    resource (404 first when there is none)."""
    header = request.headers.get("If-Match")
    if not header:
        raise PreconditionRequired("Send If-Match with the ETag you read.")
    if not ENTITY_TAGS.match(header):
        raise BadRequest('If-Match must be an entity-tag such as "3", from the ETag header.')
    match = _ETAG.match(header.strip())
    return int(match.group(1)) if match else UNMATCHABLE_VERSION



def bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer …`` header; None when there is none, or it is
    not a plausible token (too long, or not visible ASCII)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256 or not token.isascii() or not token.isprintable():
        return None
    return token


def run(work, *, authenticated: bool = True):
    """Run ``work(uow, actor)`` in this request's unit of work and return its result.

    On an authenticated route the unit was opened, and the bearer token checked in it, before
    the view read the request (access.authenticate_request); a retried unit checks the token
    again. ``authenticated=False`` is for public routes: no token, actor None.

    A request that carries an Idempotency-Key holds its key's lock in that unit (its claim); the
    unit then stays open after the work, and commits with the key and its answer after the
    view (clarity.api.idempotency).
    """
    opened = g.pop("unit", None)
    claim = None if opened is None else opened.claim

    def call(uow):
        if uow.actor is None and authenticated:
            auth.authenticate(uow, bearer_token(), settings=runtime().settings)
        if claim is not None:
            claim.enter(uow)
        return work(uow, uow.actor)

    return runtime().db.run(call, opened=opened, hold=None if claim is None else claim.hold,
                            request_id=g.request_id, client_addr=request.remote_addr)
