"""Opaque list cursors: a keyset position (clarity.pagination) as URL-safe text, signed and
bound to the list that issued it, so a malformed, altered or foreign cursor is refused.

A cursor is ``base64url(mac || payload)`` without padding. ``payload`` is the compact JSON
array of the position's keys, each a string tagged with its type so it comes back as it went:
``t`` a timestamp (ISO 8601, offset kept), ``d`` a date, ``u`` a uuid (hex), ``i`` an int,
``s`` a string (``["t2030-05-01T09:00:00+00:00", "u0f1e…"]``). ``mac`` is the first 16 bytes
of HMAC-SHA256, under a key derived for the list's endpoint from the blind-index root key
(Keyring.blind_index: HKDF with the info ``clarity blind index cursor.<endpoint>``, a scope no
column has), over the SHA-256 of the list's path arguments (the patient of a patient's list)
and the payload. The keys live in configuration, so every worker, and the next deployment,
reads the cursors of the others. A list whose key changes shape must change its endpoint or
``SCOPE``: its old cursors then fail the check instead of reaching the query.

No Flask here: clarity.api.common binds these to the request (decode_cursor, next_link).
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping

SCOPE = "cursor"
MAC_BYTES = 16
_TEXT = re.compile(r"^[A-Za-z0-9_-]+$")
_PARSE = {"t": dt.datetime.fromisoformat, "d": dt.date.fromisoformat, "u": uuid.UUID, "i": int, "s": str}


class InvalidCursor(ValueError):
    """The text is not a cursor this list issued."""


def encode(position: tuple, *, keyring, endpoint: str, path_args: Mapping | None = None) -> str:
    """The cursor of ``position`` (a tuple of timestamps, dates, uuids, ints and strings) for
    the list served at ``endpoint`` with ``path_args``; TypeError for any other key type."""
    payload = json.dumps([_tagged(key) for key in position], separators=(",", ":"), ensure_ascii=False).encode()
    raw = _mac(payload, keyring, endpoint, path_args) + payload
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(cursor: str, *, keyring, endpoint: str, path_args: Mapping | None = None) -> tuple:
    """The position in a cursor made by ``encode`` for this same list; InvalidCursor when it is
    malformed, altered, truncated, or was issued by another list."""
    if not isinstance(cursor, str) or not _TEXT.match(cursor):
        raise InvalidCursor("not base64url")
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCursor("not base64url") from None
    # Only the canonical spelling: unused trailing bits must not make a second valid cursor.
    if len(raw) <= MAC_BYTES or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != cursor:
        raise InvalidCursor("truncated or not canonical")
    mac, payload = raw[:MAC_BYTES], raw[MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(payload, keyring, endpoint, path_args)):
        raise InvalidCursor("altered or from another list")
    try:
        keys = json.loads(payload)
        return tuple(_PARSE[key[0]](key[1:]) for key in keys)
    except (ValueError, TypeError, KeyError, IndexError):  # signed by us, so only after a format change
        raise InvalidCursor("unreadable") from None


def _tagged(key) -> str:
    if isinstance(key, bool):
        raise TypeError("a cursor key cannot be a bool")
    if isinstance(key, dt.datetime):
        return "t" + key.isoformat()
    for cls, tag, text in ((dt.date, "d", dt.date.isoformat), (uuid.UUID, "u", lambda u: u.hex),
                           (int, "i", str), (str, "s", str)):
        if isinstance(key, cls):
            return tag + text(key)
    raise TypeError(f"a cursor key cannot be a {type(key).__name__}")


def _mac(payload: bytes, keyring, endpoint: str, path_args: Mapping | None) -> bytes:
    binding = json.dumps(sorted((name, str(value)) for name, value in (path_args or {}).items())).encode()
    digest = hashlib.sha256(len(binding).to_bytes(4, "big") + binding + payload).hexdigest()
    # A hex digest is its own normal form, so the blind index is a plain HMAC of it.
    return keyring.blind_index(SCOPE, endpoint, digest)[:MAC_BYTES]
