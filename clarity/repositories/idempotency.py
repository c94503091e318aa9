"""Idempotency keys: the answer to a write that carried an ``Idempotency-Key``, kept for a
replay. The answer usually holds PHI, so it is sealed like PHI (one AES-GCM envelope, with the
request's fingerprint inside), bound to its principal and key: an envelope copied to another
principal's or another key's row fails to open."""
from __future__ import annotations

import base64
import dataclasses

from psycopg.rows import dict_row

from clarity.errors import Unavailable

TABLE, RESPONSE_COLUMN = "idempotency_keys", "response"


@dataclasses.dataclass(frozen=True)
class StoredResponse:
    """What a replay answers, and what it is compared with.

    ``fingerprint``: the digest of the request that got the answer (clarity.idempotency);
    ``headers``: the view's own (Content-Type, Location, ETag, Link, ...), not the ones every
    response gets per request (X-Request-ID, rate-limit counts, Cache-Control);
    ``audit``: what a replay's audit event names (ids only, as the original request's event:
    ``entity_type``, ``entity_id``, ``patient_id``, ``patient_ids``, ``emergency``), or None
    when the request recorded no event."""

    fingerprint: bytes
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    audit: dict | None = None

    def to_fields(self) -> dict:
        return {"fingerprint": self.fingerprint.hex(), "status": self.status,
                "headers": [list(pair) for pair in self.headers],
                "body": base64.b64encode(self.body).decode("ascii"), "audit": self.audit}

    @classmethod
    def from_fields(cls, fields: dict) -> "StoredResponse":
        return cls(fingerprint=bytes.fromhex(fields["fingerprint"]), status=fields["status"],
                   headers=tuple((name, value) for name, value in fields["headers"]),
                   body=base64.b64decode(fields["body"]), audit=fields["audit"])


class IdempotencyRepository:
    """One principal's keys (row-level security shows no other's), and the purge of expired
    ones. ``keyring`` may be None: then only the purge works, and storing or reading an answer
    is Unavailable (503)."""

    def __init__(self, conn, queries, keyring):
        self.conn = conn
        self.q = queries
        self.keyring = keyring

    def lock(self, lock_key: int) -> bool:
        """Take the transaction's lock on a key (clarity.idempotency.lock_key); False at once
        when another transaction holds it."""
        return self.q.lock_idempotency_key.value(self.conn, {"lock_key": lock_key})

    def get(self, actor_id, key_hash: bytes) -> StoredResponse | None:
        """The live answer stored under the actor's key; None when none is, or it expired.
        Raises DecryptionError when its envelope does not open (altered, moved, or under a key
        that is no longer configured)."""
        row = self.q.get_idempotency_key.one(self.conn, {"actor_id": actor_id, "key_hash": key_hash}, dict_row)
        if row is None:
            return None
        fields = self._keys().decrypt(TABLE, RESPONSE_COLUMN, _row_id(actor_id, key_hash),
                                      row["response"], row["response_key_id"])
        return StoredResponse.from_fields(fields)

    def add(self, actor_id, key_hash: bytes, stored: StoredResponse, *, ttl_seconds: int) -> bool:
        """Keep ``stored`` under the actor's key for ``ttl_seconds``, replacing an expired
        answer; False when a live answer is stored already (nothing is written then)."""
        envelope, key_id = self._keys().encrypt(TABLE, RESPONSE_COLUMN, _row_id(actor_id, key_hash),
                                                stored.to_fields())
        expires_at = self.q.upsert_idempotency_key.value(self.conn, {
            "actor_id": actor_id, "key_hash": key_hash, "response": envelope, "response_key_id": key_id,
            "ttl_seconds": ttl_seconds})
        return expires_at is not None

    def delete_expired(self, *, limit: int) -> int:
        """Delete up to ``limit`` expired keys of every principal; how many. Only in the
        maintenance actor's transaction (clarity.idempotency.MAINTENANCE): anyone else's
        sees none."""
        return self.q.delete_expired_idempotency_keys.rowcount(self.conn, {"limit": limit})

    def _keys(self):
        if self.keyring is None:
            raise Unavailable("Encryption keys are not configured.", retry_after=60)
        return self.keyring


def _row_id(actor_id, key_hash: bytes) -> str:
    """What an envelope is bound to: the row's primary key."""
    return f"{actor_id}/{key_hash.hex()}"
