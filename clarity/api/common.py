"""What every resource shares: safe text fields, ETags, cursors, and running a unit of work."""
from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
from urllib.parse import urlencode

from flask import current_app, g, request
from marshmallow import ValidationError, fields, validate

from clarity.errors import BadRequest, PreconditionFailed, PreconditionRequired
from clarity.services import auth

MAX_LIMIT = 200
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ETAG = re.compile(r'^"(\d{1,9})"$')


def _length(min_length, max_length):
    return validate.Length(min=min_length, max=max_length)


class Text(fields.String):
    """A string with a length limit that refuses NUL and other control characters."""

    def __init__(self, max_length: int = 200, min_length: int = 1, validate=None, **kwargs):
        validators = [_length(min_length, max_length)] + ([validate] if validate else [])
        super().__init__(validate=validators, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if _CONTROL.search(text):
            raise ValidationError("Control characters are not allowed.")
        return text


def limit_field(strict: bool = True):
    """Page size, 1..200 (default 50). ``strict=False`` for query strings, where it is text."""
    return fields.Integer(strict=strict, load_default=50, validate=validate.Range(min=1, max=MAX_LIMIT))


def cursor_field():
    return Text(max_length=200, load_default=None)


def encode_cursor(after) -> str | None:
    """An opaque cursor for a (created_at, id) keyset position."""
    if after is None:
        return None
    created_at, row_id = after
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, id_type=uuid.UUID):
    """The keyset position in a cursor, its id converted by ``id_type`` (``int`` for bigint
    ids); BadRequest when it was not made by encode_cursor."""
    if cursor is None:
        return None
    try:
        created_at, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return dt.datetime.fromisoformat(created_at), id_type(row_id)
    except (ValueError, TypeError):
        raise BadRequest("The cursor is invalid; use the one from the previous page.") from None


def next_link(after) -> dict:
    """A ``Link: <…>; rel="next"`` header for a GET list, or none on the last page."""
    cursor = encode_cursor(after)
    if cursor is None:
        return {}
    args = request.args.to_dict()
    args["cursor"] = cursor
    # Encoded: a timestamp filter's "+00:00" would otherwise come back as a space.
    return {"Link": f'<{request.path}?{urlencode(args)}>; rel="next"'}


def etag(version: int) -> dict:
    return {"ETag": f'"{version}"'}


def if_match_version() -> int:
    """The version a PATCH/DELETE was based on, from If-Match; 428 when missing, 412 when not
    an ETag this API issued."""
    header = request.headers.get("If-Match")
    if not header:
        raise PreconditionRequired("Send If-Match with the ETag you read.")
    match = _ETAG.match(header.strip())
    if not match:
        raise PreconditionFailed("If-Match does not match the current ETag.")
    return int(match.group(1))


def bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def clarity():
    return current_app.extensions["clarity"]


def run(work, *, authenticated: bool = True):
    """Run ``work(uow, actor)`` in this request's unit of work and return its result.

    With ``authenticated`` the bearer token is checked first, in the same transaction.
    """
    app = clarity()

    def call(uow):
        actor = auth.authenticate(uow, bearer_token(), settings=app.settings) if authenticated else None
        return work(uow, actor)

    return app.db.run(call, request_id=g.request_id, client_addr=request.remote_addr)
