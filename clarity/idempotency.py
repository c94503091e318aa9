"""Idempotency keys apart from HTTP: the digests that name a key and a request, and the purge of
expired keys (by ``flask --app wsgi idempotency purge`` and on the background sealer's
schedule). The request side is clarity.api.idempotency; the rows, clarity.repositories.idempotency.
"""
from __future__ import annotations

import hashlib
import logging
import time
import uuid

from clarity.security.access import Actor

log = logging.getLogger(__name__)

# The purge acts as this actor: the idempotency_keys policies (migration 0021) show it the
# expired keys of every principal and nothing else. No user can hold the role (users_role_check).
MAINTENANCE = Actor(id=uuid.UUID(int=0), role="maintenance")
PURGE_BATCH_SIZE = 1000
# The background purge runs at most this often per worker; the sealer ticks every few seconds.
PURGE_EVERY_SECONDS = 60.0
# Per background run: bounds the time a sealer tick spends on a backlog (the rest waits a minute).
PURGE_MAX_BATCHES = 10


def key_digest(key: str) -> bytes:
    """What is stored of a client's key: its SHA-256 (a client may put anything in it)."""
    return hashlib.sha256(key.encode("ascii")).digest()


def lock_key(principal_id: uuid.UUID, key_hash: bytes) -> int:
    """The advisory lock's 32-bit key for one principal's key. Two pairs sharing it (one chance
    in 2**32) only make one of them wait for the other: a 409, retried."""
    digest = hashlib.sha256(principal_id.bytes + key_hash).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def fingerprint(method: str, target: str, body_sha256: bytes) -> bytes:
    """The digest that tells one request from another under the same key: SHA-256 of the
    method, the target (path and query string) and the SHA-256 of the body. The body enters by
    its digest so a route that streams its body can hash it as it reads (body_read)."""
    return hashlib.sha256(b"%s %s\n%s" % (method.encode("ascii"), target.encode("utf-8"), body_sha256)).digest()


def purge(db, *, batch_size: int = PURGE_BATCH_SIZE, max_batches: int | None = None) -> int:
    """Delete expired idempotency keys of every principal, one unit of work per batch of
    ``batch_size`` (at most ``max_batches``; None: until none is left); return how many."""
    purged, batches = 0, 0
    while max_batches is None or batches < max_batches:
        deleted = db.run(lambda uow: uow.idempotency.delete_expired(limit=batch_size), actor=MAINTENANCE)
        purged, batches = purged + deleted, batches + 1
        if deleted < batch_size:
            break
    return purged


class Purger:
    """A chore for the background sealer's thread (clarity.audit_chain.BackgroundSealer): purge
    expired keys at most every PURGE_EVERY_SECONDS. Never raises: errors are logged by type
    only, and the next due run retries."""

    def __init__(self, db, every_seconds: float = PURGE_EVERY_SECONDS):
        self.db = db
        self.every_seconds = every_seconds
        self._last: float | None = None

    def __call__(self) -> int | None:
        """Purge if due; how many keys went, or None when it was not due or failed."""
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every_seconds:
            return None
        self._last = now
        try:
            return purge(self.db, max_batches=PURGE_MAX_BATCHES)
        except Exception as exc:  # the sealer's thread must survive anything
            log.warning("purging expired idempotency keys failed (%s); retrying in %g s",
                        type(exc).__name__, self.every_seconds)
            return None
