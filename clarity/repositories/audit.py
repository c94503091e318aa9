"""Audit events and their seals: append-only writes, the auditors' reads, the sealer's and the
verifier's queries, and the failed sign-ins that drive the sign-in throttles."""
from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator

import orjson
from psycopg.rows import class_row, dict_row

# Every column of an event, as the chain hashes it (see clarity.audit_chain.canonical), but
# patient_ids, which it hashes only when set.
EVENT_COLUMNS = ("id", "xid", "occurred_at", "actor_id", "actor_role", "action", "event_type",
                 "entity_type", "entity_id", "patient_id", "outcome", "client_addr",
                 "request_id", "fields")


@dataclasses.dataclass(frozen=True)
class AuditRecord:
    """An audit event as auditors read it."""

    id: int
    occurred_at: dt.datetime
    actor_id: uuid.UUID | None
    actor_role: str | None
    action: str
    event_type: str
    entity_type: str | None
    entity_id: str | None
    patient_id: uuid.UUID | None
    patient_ids: list[uuid.UUID] | None
    outcome: str
    client_addr: str | None
    request_id: str | None
    fields: list[str]


@dataclasses.dataclass(frozen=True)
class LoginThrottle:
    """The failed sign-ins that bear on one attempt, counted from the audit trail.

    ``address_retry_after`` / ``pair_retry_after``: seconds until the address's (or the
    account-and-address pair's) failures in the window fall below its limit; None when they
    are below it. ``account_failures``: the account's failures since its last success or
    throttle clear; ``account_failure_age``: seconds since the latest of them (None when none).
    ``familiar``: the account signed in successfully from this address recently.
    """

    address_retry_after: float | None
    pair_retry_after: float | None
    account_failures: int
    account_failure_age: float | None
    familiar: bool


@dataclasses.dataclass(frozen=True)
class ChainHead:
    """The last seal; ``event_xid`` is None when its event row is gone."""

    seq: int
    hash: bytes
    event_id: int
    horizon: int
    sealed_at: dt.datetime
    event_xid: int | None


@dataclasses.dataclass(frozen=True)
class Seal:
    """One link of the chain with the event it seals (None when the event row is gone)."""

    seq: int
    event_id: int
    prev_hash: bytes
    hash: bytes
    horizon: int
    event: dict | None


class AuditRepository:
    def __init__(self, conn, queries):
        self.conn = conn
        self.q = queries

    def add_all(self, events, *, actor, client_addr, request_id) -> None:
        """Write events in one statement, stamped with the request's context."""
        rows = [{
            "actor_id": _text(event.actor_id or (actor.id if actor else None)),
            "actor_role": actor.role if actor else None,
            "action": event.action,
            "event_type": event.event_type,
            "entity_type": event.entity_type,
            "entity_id": _text(event.entity_id),
            "patient_id": _text(event.patient_id),
            "patient_ids": [str(p) for p in event.patient_ids] or None,
            "outcome": event.outcome,
            "client_addr": client_addr,
            "request_id": request_id,
            "fields": sorted(event.fields),
        } for event in events]
        self.q.insert_audit_events.rowcount(self.conn, {"events": orjson.dumps(rows).decode()})

    def list(self, *, patient_id=None, actor_id=None, action=None, occurred_from=None,
             occurred_to=None, after: tuple | None = None, limit: int) -> list[AuditRecord]:
        """Events newest first, strictly older than the ``(occurred_at, id)`` cursor ``after``."""
        after_occurred_at, after_id = after or (None, None)
        return self.q.list_audit_events.all(self.conn, {
            "patient_id": patient_id, "actor_id": actor_id, "action": action,
            "occurred_from": occurred_from, "occurred_to": occurred_to,
            "after_occurred_at": after_occurred_at, "after_id": after_id, "limit": limit,
        }, class_row(AuditRecord))

    def lock_login_email(self, email: str) -> None:
        """Wait until the other sign-in attempts naming this email (in any case) have
        committed; the lock is held to the end of this transaction, so the attempts after
        this one count its failure."""
        self.q.lock_login_email.value(self.conn, {"email": email})

    def get_login_throttle(self, *, user_id, client_addr, window_seconds, account_window_seconds,
                           familiar_seconds, max_per_pair, max_per_address) -> LoginThrottle:
        """What the audit trail says about a sign-in attempt on ``user_id`` (None: no account)
        from ``client_addr`` (may be None); see LoginThrottle and sql/audit.sql."""
        return self.q.get_login_throttle.one(self.conn, {
            "user_id": user_id, "client_addr": client_addr, "window_seconds": window_seconds,
            "account_window_seconds": account_window_seconds, "familiar_seconds": familiar_seconds,
            "max_per_pair": max_per_pair, "max_per_address": max_per_address,
        }, class_row(LoginThrottle))

    def try_lock_sealing(self) -> bool:
        """Take the sealer's transaction-scoped advisory lock; False at once when it is held."""
        return self.q.lock_audit_sealing.value(self.conn)

    def seal_horizon(self) -> int:
        """The xid below which every transaction has finished (see sql/audit.sql)."""
        return int(self.q.get_audit_seal_horizon.value(self.conn))

    def last_seal(self) -> ChainHead | None:
        row = self.q.get_last_audit_seal.one(self.conn, None, dict_row)
        if row is None:
            return None
        return ChainHead(**{**row, "horizon": int(row["horizon"]), "event_xid": _int(row["event_xid"])})

    def list_to_seal(self, after: tuple[int, int], horizon: int, limit: int) -> list[dict]:
        """Committed events after the ``(xid, id)`` position ``after`` with xid below
        ``horizon``, in chain order, as dicts of EVENT_COLUMNS."""
        rows = self.q.list_audit_events_to_seal.all(self.conn, {
            "after_xid": str(after[0]), "after_id": after[1], "horizon": str(horizon), "limit": limit,
        }, dict_row)
        return [{**row, "xid": int(row["xid"])} for row in rows]

    def add_seals(self, *, seqs, event_ids, prev_hashes, hashes, horizon: int) -> None:
        """Append one batch of seals (parallel lists) in one statement."""
        self.q.insert_audit_seals.rowcount(self.conn, {
            "seqs": seqs, "event_ids": event_ids, "prev_hashes": prev_hashes, "hashes": hashes,
            "horizon": str(horizon),
        })

    def iter_seals(self, batch_size: int = 5000) -> Iterator[Seal]:
        """Every seal in seq order with its event, in keyset batches (never all in memory).
        Run it inside one REPEATABLE READ transaction for a consistent walk."""
        after_seq = 0
        while True:
            rows = self.q.list_audit_seals_with_events.all(
                self.conn, {"after_seq": after_seq, "limit": batch_size}, dict_row)
            yield from map(_seal, rows)
            if len(rows) < batch_size:
                return
            after_seq = rows[-1]["seq"]

    def misplaced_event(self, horizon: int) -> int | None:
        """The first unsealed event below ``horizon`` or with a never-assigned xid, or None."""
        return self.q.get_misplaced_audit_event.value(self.conn, {"horizon": str(horizon)})

    def overdue_event(self, after: tuple[int, int], max_unsealed_seconds: float) -> int | None:
        """The oldest unsealed event after ``after`` older than the limit, or None."""
        return self.q.get_overdue_audit_event.value(self.conn, {
            "after_xid": str(after[0]), "after_id": after[1],
            "max_unsealed_seconds": max_unsealed_seconds,
        })

    def count_unsealed(self, after: tuple[int, int]) -> int:
        return self.q.count_unsealed_audit_events.value(
            self.conn, {"after_xid": str(after[0]), "after_id": after[1]})


def _seal(row: dict) -> Seal:
    event = None
    if row["id"] is not None:
        event = {name: row[name] for name in (*EVENT_COLUMNS, "patient_ids")}
        event["xid"] = int(event["xid"])
    return Seal(seq=row["seq"], event_id=row["event_id"], prev_hash=row["prev_hash"],
                hash=row["hash"], horizon=int(row["horizon"]), event=event)


def _text(value):
    return None if value is None else str(value)


def _int(value):
    return None if value is None else int(value)
