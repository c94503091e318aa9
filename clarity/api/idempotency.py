"""Idempotent writes: the ``Idempotency-Key`` request header (draft-ietf-httpapi-idempotency-key-header).

Covered: every authenticated POST, and PUT of the digital twin (each PUT appends a version).
Elsewhere the header is ignored and not even parsed: GET, PATCH and DELETE (retrying those is
safe: PATCH and DELETE carry If-Match), and sign-in, which has no principal to scope a key to
and whose answer is a live bearer token, never to be kept.

How a covered request with a key runs, in the one unit of work authentication opened:

1. ``check_request`` (before_request, after the token, rate limit, role and media type): the key
   is parsed (400), the principal's key locked with a try-lock (held: its first request is still
   running, 409 with Retry-After), and looked up. A live answer for the same request (the
   fingerprint: method, target, body) is replayed, byte for byte, and audited as a read; for
   another request it is 422. An expired or absent key lets the request through.
2. The view's ``run()`` does the work in that unit and leaves it open (Database.run(hold=...));
   a serialization failure still re-runs the work, in a new unit that takes the lock again.
3. ``_store_response`` (the request's first after-request function): a 2xx answer is stored,
   enciphered, under the key in the same transaction, which then commits; if the commit fails
   the answer becomes a 503. Any other answer rolls the work back and stores nothing, so the
   key is free again: nothing of a failed request was done (draft: the key may be reused).

A request without the header costs one header lookup: no statement, no other work (``run()``
finds no claim on its unit of work: an attribute read).
"""
from __future__ import annotations

import hashlib
import logging
import re

from flask import after_this_request, current_app, g, request

from clarity import idempotency
from clarity.api.common import runtime
from clarity.audit import READ, AuditEvent
from clarity.errors import BadRequest, ClarityError, Conflict, Invalid, Unavailable, translate
from clarity.repositories.idempotency import StoredResponse

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
ENVIRON_KEY = "HTTP_IDEMPOTENCY_KEY"  # the header's WSGI name
REPLAYED = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
PUT_ENDPOINTS = frozenset({"digital_twins.put_twin"})
# The draft's sf-string: a quoted string of visible ASCII, \" and \\ escaped (a space, which
# sf-string allows, is refused: keys are visible ASCII). Leniently, also the bare value, without
# quotes, backslash, comma or semicolon (a repeated header or a parameter is refused, not misread).
_QUOTED = re.compile(r'"((?:[\x21\x23-\x5b\x5d-\x7e]|\\["\\])+)"')
_BARE = re.compile(r'[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+')
_UNESCAPE = re.compile(r'\\(["\\])')
_PER_REQUEST_HEADERS = frozenset({"content-length"})
_CHUNK = 64 * 1024


class NotStored(ClarityError):
    """Ends a held unit whose answer was not a success: the work rolls back, and its audit
    events are kept as failures."""


def streamed_body(max_bytes):
    """Declare that a covered view reads its body as a stream and reports the body's SHA-256
    with ``body_read`` (put ``@streamed_body(max_bytes)`` right above ``def``): the key check
    then never buffers the body. ``max_bytes()`` is the most the view accepts: a retry whose
    key holds an answer has its body read (and only hashed) before the view, up to that."""
    def declare(view):
        view.clarity_streamed_body = max_bytes
        return view
    return declare


def body_read(body_sha256: bytes) -> None:
    """For a ``streamed_body`` view: the SHA-256 of the body it has read, which completes the
    request's fingerprint. Does nothing for a request without a key."""
    claim = g.get("idempotency")
    if claim is not None:
        claim.body_sha256 = body_sha256


def parse_key(header: str) -> str:
    """The key a header value carries: ``"…"`` (an sf-string) or, leniently, the bare value;
    1..255 visible ASCII characters. BadRequest otherwise."""
    quoted = _QUOTED.fullmatch(header.strip(" \t"))
    key = _UNESCAPE.sub(r"\1", quoted.group(1)) if quoted else header.strip(" \t")
    if not (quoted or _BARE.fullmatch(key)) or len(key) > MAX_KEY_LENGTH:
        raise BadRequest(f'{HEADER} must be a quoted string of 1 to {MAX_KEY_LENGTH} visible ASCII characters, '
                         'such as "8e03978e-40d5-43e8-bc93-6894a57f9324".')
    return key


def check_request():
    """before_request: for a covered request carrying a key, lock and look the key up in the
    request's unit of work; return the replayed answer, or let the view run (see the module)."""
    header = request.environ.get(ENVIRON_KEY)  # request.headers.get(HEADER), at half the cost
    if header is None:
        return None
    uow = g.get("unit")
    if uow is None or not (request.method == "POST" or request.endpoint in PUT_ENDPOINTS):
        return None  # sign-in, an unrouted request, or a method the key does not cover
    try:
        claim = Claim(parse_key(header), uow.actor.id)
        stored = claim.acquire(uow)
        if stored is not None:
            return _replay(uow, stored)
    except BaseException as exc:
        g.pop("unit", None)
        uow.end(exc)
        raise
    g.idempotency = claim
    return None


class Claim:
    """A request's hold on one key of its principal: the unit of work holding the lock, and the
    request's fingerprint (for a streamed body, once ``body_read`` reports its digest)."""

    def __init__(self, key: str, principal_id):
        self.principal_id = principal_id
        self.key_hash = idempotency.key_digest(key)
        self.lock_key = idempotency.lock_key(principal_id, self.key_hash)
        self.streamed = getattr(current_app.view_functions[request.endpoint], "clarity_streamed_body", None)
        self.body_sha256 = None if self.streamed else hashlib.sha256(request.get_data(cache=True)).digest()
        self.unit = None
        self.holding = False

    def fingerprint(self) -> bytes:
        return idempotency.fingerprint(request.method, _target(), self.body_sha256)

    def acquire(self, uow) -> StoredResponse | None:
        """Lock the key in ``uow`` and return its live answer, if any. Conflict (409) when
        another request holds the lock; Invalid (422) when the answer was for another request."""
        if not uow.idempotency.lock(self.lock_key):
            raise Conflict(f"A request with this {HEADER} is still being processed; retry shortly.",
                           headers={"Retry-After": "1"})
        self.unit, uow.claim = uow, self
        stored = uow.idempotency.get(self.principal_id, self.key_hash)
        if stored is not None:
            if self.body_sha256 is None:  # a streamed body, not read yet: read it just to hash it
                self.body_sha256 = _stream_digest(self.streamed())
            if stored.fingerprint != self.fingerprint():
                raise Invalid(f"This {HEADER} was used for a different request; use a new key.")
        return stored

    def enter(self, uow) -> None:
        """From ``run()``: the unit the work runs in holds the lock. A new unit (the work is
        re-run after a serialization failure) takes it again; should the key have been answered
        meanwhile, by a request that got the lock in between, this one is a 409: its retry is
        replayed."""
        if uow is self.unit:
            return
        if self.acquire(uow) is not None:
            raise _just_answered()

    def hold(self, uow) -> None:
        """From ``Database.run``: the work is done and ``uow`` stays open for the answer."""
        self.unit = g.unit = uow
        if not self.holding:
            self.holding = True
            after_this_request(_store_response)


def _target() -> str:
    """The request's path and query string, as sent."""
    return f"{request.path}?{request.query_string.decode('latin-1')}"


def _stream_digest(max_bytes: int) -> bytes:
    """The SHA-256 of a streamed body, read in pieces; 413 past ``max_bytes``."""
    request.max_content_length = max_bytes
    digest = hashlib.sha256()
    for chunk in iter(lambda: request.stream.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.digest()


def _replay(uow, stored: StoredResponse):
    """Answer as the key's first request was answered, audited as a read of that answer; the
    unit (its lock and its audit event) commits before the answer leaves."""
    if stored.audit is not None:
        subject = stored.audit
        kind = "idempotency.emergency_replay" if subject["emergency"] else "idempotency.replay"
        uow.audit(AuditEvent(READ, kind, subject["entity_type"], subject["entity_id"], subject["patient_id"],
                             patient_ids=tuple(subject["patient_ids"])))
    g.pop("unit", None)
    uow.commit()
    response = current_app.response_class(stored.body, status=stored.status, headers=list(stored.headers))
    response.headers[REPLAYED] = "true"
    return response


def _store_response(response):
    """After the view of a request whose work is held open: store a 2xx answer under the key and
    commit; roll anything else back. Never raises: a failure becomes its problem answer."""
    claim, uow = g.idempotency, g.pop("unit", None)
    if uow is None:
        return response
    if not 200 <= response.status_code < 300:
        uow.end(NotStored())
        return response
    try:
        if not uow.idempotency.add(claim.principal_id, claim.key_hash, _stored(claim, uow, response),
                                   ttl_seconds=runtime().settings.idempotency_ttl_seconds):
            raise _just_answered()
    except BaseException as exc:
        uow.end(exc)
        if not isinstance(exc, Exception):
            raise
        return _problem(exc)
    try:
        uow.commit()
    except Exception as exc:
        # Type only: a driver message could quote a value.
        log.error("committing a write with an %s failed (%s)", HEADER, type(exc).__name__)
        translate(exc)  # a driver error is counted in clarity_db_errors_total, as everywhere
        return _problem(Unavailable(f"The write could not be committed; retry with the same {HEADER}: "
                                    "the retry does the write, or answers as it was answered."))
    return response


def _just_answered() -> Conflict:
    return Conflict(f"A request with this {HEADER} has just been answered; retry to get its answer.",
                    headers={"Retry-After": "1"})


def _stored(claim: Claim, uow, response) -> StoredResponse:
    if claim.body_sha256 is None:
        raise RuntimeError(f"{request.endpoint} is a streamed_body view but never called body_read")
    headers = tuple((name, value) for name, value in response.headers.items()
                    if name.lower() not in _PER_REQUEST_HEADERS)
    return StoredResponse(claim.fingerprint(), response.status_code, headers, response.get_data(),
                          _audit_subject(uow.events))


def _audit_subject(events) -> dict | None:
    """What a replay's audit event names: the first successful event of the original request
    (ids only), and whether it was an emergency access."""
    event = next((e for e in events if e.outcome == "success"), None)
    if event is None:
        return None
    return {"entity_type": event.entity_type, "entity_id": _text(event.entity_id),
            "patient_id": _text(event.patient_id), "patient_ids": [str(p) for p in event.patient_ids],
            "emergency": ".emergency_" in event.event_type}


def _text(value) -> str | None:
    return None if value is None else str(value)


def _problem(exc: BaseException):
    """The problem answer the app's error handlers give ``exc``."""
    return current_app.make_response(current_app.handle_user_exception(exc))
