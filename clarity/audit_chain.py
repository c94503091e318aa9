"""The hash chain that makes the audit trail tamper-evident: sealing, verification, the chain
head, and the background sealer. (The events themselves: clarity.audit.)

Sealing. Each event row records the id of the transaction that wrote it (``xid``). A sealer
takes the horizon ``pg_snapshot_xmin(pg_current_snapshot())``: every transaction below it has
committed or aborted, so the committed events below it are all visible and no later commit can
add one below it. It appends a seal per event, in ``(xid, id)`` order after the last sealed
event, with ``hash = SHA-256(prev_hash || canonical(event))`` (the first ``prev_hash`` is 32
zero bytes). Requests take no lock for this: a sealer only skips what is not final yet, and
sealers exclude each other with a try-lock, so nobody ever waits for anybody.

Verification walks the seals in order and recomputes every hash; see ``verify``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import logging

from clarity.idempotency import Purger
from clarity.periodic import Periodic
from clarity.repositories.audit import EVENT_COLUMNS, ChainHead, Seal

GENESIS_HASH = bytes(32)
# A batch of 1,000 events in memory at a time: a worker sealing a backlog of 100,000 grows by
# about 4 MB (17 MB with batches of 5,000, memory the worker keeps).
SEAL_BATCH_SIZE = 1000
SEAL_MAX_BATCHES = 100  # per background run: bounds the sealer's transaction on a backlog

log = logging.getLogger(__name__)


class ChainBroken(RuntimeError):
    """The chain head's event row is gone: the sealer cannot know where to continue."""


def canonical(event: dict) -> bytes:
    """The bytes a seal hashes: JSON of every column in EVENT_COLUMNS (KeyError if one is
    missing), keys sorted, no whitespace, ASCII only; ``occurred_at`` in UTC ISO 8601 with
    microseconds; uuids, addresses and xids as the database prints them. ``patient_ids`` (a list
    page's patients) only when set, so events sealed before that column existed hash as they did."""
    values = {name: event[name] for name in EVENT_COLUMNS}
    if event.get("patient_ids") is not None:
        values["patient_ids"] = list(event["patient_ids"])
    values["occurred_at"] = _utc_iso(values["occurred_at"])
    values["fields"] = list(values["fields"])
    return json.dumps(values, sort_keys=True, separators=(",", ":")).encode("ascii")


def chain_hash(prev_hash: bytes, event: dict) -> bytes:
    return hashlib.sha256(prev_hash + canonical(event)).digest()


def _utc_iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seal(repo, *, batch_size: int = SEAL_BATCH_SIZE, max_batches: int | None = SEAL_MAX_BATCHES) -> int | None:
    """Seal the committed events the horizon makes final; return how many, or None when
    another sealer holds the lock (this one then does nothing).

    Commit-safe: only events with an xid below the horizon are sealed, and those are final
    (every transaction below it has ended); the next run continues after the last sealed
    ``(xid, id)``, and nothing can commit below a horizon once taken, so no committed event is
    ever skipped, whatever order transactions commit in.

    Runs in the caller's transaction, which must not have written anything yet (its own xid
    would hold the horizon back) and whose commit publishes the seals. Each batch is one
    INSERT; at most ``max_batches`` batches (None: no limit). Raises ChainBroken.
    """
    if not repo.try_lock_sealing():
        return None
    horizon = repo.seal_horizon()
    seq, prev_hash, position = _continue_from(repo.last_seal())
    sealed = 0
    for _ in itertools.count() if max_batches is None else range(max_batches):
        events = repo.list_to_seal(position, horizon, batch_size + 1)
        batch, more = events[:batch_size], len(events) > batch_size
        if not batch:
            break
        last = batch[-1]
        # A seal's horizon promises that every event below it is sealed; while more events
        # wait, that holds only below the last sealed event's xid.
        seq, prev_hash = _append(repo, batch, seq, prev_hash, last["xid"] if more else horizon)
        position, sealed = (last["xid"], last["id"]), sealed + len(batch)
        if not more:
            break
    return sealed


def _continue_from(head: ChainHead | None) -> tuple[int, bytes, tuple[int, int]]:
    """(last seq, last hash, last sealed (xid, id)) of the chain; genesis when empty."""
    if head is None:
        return 0, GENESIS_HASH, (0, 0)
    if head.event_xid is None:
        raise ChainBroken(f"the event of seal {head.seq} is missing; run `audit verify`")
    return head.seq, head.hash, (head.event_xid, head.event_id)


def _append(repo, events: list[dict], seq: int, prev_hash: bytes, horizon: int) -> tuple[int, bytes]:
    seqs, prev_hashes, hashes = [], [], []
    for event in events:
        seq += 1
        seqs.append(seq)
        prev_hashes.append(prev_hash)
        prev_hash = chain_hash(prev_hash, event)
        hashes.append(prev_hash)
    repo.add_seals(seqs=seqs, event_ids=[e["id"] for e in events], prev_hashes=prev_hashes,
                   hashes=hashes, horizon=horizon)
    return seq, prev_hash


def export_head(repo) -> dict:
    """The chain head, JSON-ready, for an operator to keep outside the database:
    ``{"seq", "hash" (hex), "event_id", "sealed_at"}``; seq 0 and the genesis hash when empty."""
    head = repo.last_seal()
    if head is None:
        return {"seq": 0, "hash": GENESIS_HASH.hex(), "event_id": None, "sealed_at": None}
    return {"seq": head.seq, "hash": head.hash.hex(), "event_id": head.event_id,
            "sealed_at": head.sealed_at.isoformat()}


def parse_head(data) -> tuple[int, bytes]:
    """(seq, hash) of an exported head; ValueError when it is not one."""
    try:
        seq, digest = int(data["seq"]), bytes.fromhex(data["hash"])
    except (KeyError, TypeError, ValueError):
        raise ValueError('an exported head looks like {"seq": 12, "hash": "<64 hex digits>", …}') from None
    if seq < 0 or len(digest) != 32:
        raise ValueError("an exported head has a seq >= 0 and a 32-byte hash")
    return seq, digest


@dataclasses.dataclass(frozen=True)
class Problem:
    kind: str  # altered, deleted, broken_link, out_of_order, unsealed, head_mismatch
    message: str


@dataclasses.dataclass(frozen=True)
class Report:
    seals: int  # seals checked before the first problem (all of them when there is none)
    unsealed: int | None  # events awaiting sealing (None when a problem stopped the check)
    problem: Problem | None


def verify(repo, *, head: tuple[int, bytes] | None = None, max_unsealed_seconds: float = 300,
           batch_size: int = SEAL_BATCH_SIZE) -> Report:
    """Check the whole trail and report the first problem, in this order: along the chain, a
    seq gap or a seal not linking to the previous one (broken_link), a sealed event whose
    row is gone (deleted) or whose recomputed hash differs (altered), events out of chain
    order, and a chain that differs from the exported ``head`` (head_mismatch: rewritten and
    rehashed); then an unsealed event the sealer had already passed (out_of_order) and one
    unsealed for longer than ``max_unsealed_seconds`` (unsealed).

    Streams the seals in batches of ``batch_size``. Run it in one REPEATABLE READ
    transaction, so the chain and the checks after it see one snapshot.
    """
    walk = _ChainWalk(head)
    for link in repo.iter_seals(batch_size):
        problem = walk.check(link)
        if problem:
            return Report(walk.count, None, problem)
    problem = walk.finish() or _unsealed_problem(repo, walk, max_unsealed_seconds)
    if problem:
        return Report(walk.count, None, problem)
    return Report(walk.count, repo.count_unsealed(walk.position), None)


def _unsealed_problem(repo, walk: "_ChainWalk", max_unsealed_seconds: float) -> Problem | None:
    misplaced = repo.misplaced_event(walk.horizon)
    if misplaced is not None:
        return Problem("out_of_order", f"event {misplaced} was inserted out of order: it is unsealed, "
                                       "and its xid is one the sealer has passed or can never reach")
    overdue = repo.overdue_event(walk.position, max_unsealed_seconds)
    if overdue is not None:
        return Problem("unsealed", f"event {overdue} has been unsealed for more than {max_unsealed_seconds:g} s "
                                   "(is the sealer running? is a transaction held open?)")
    return None


class _ChainWalk:
    """The state of a walk along the seals: the expected next seq, the previous hash and
    the previous event's (xid, id)."""

    def __init__(self, head: tuple[int, bytes] | None):
        self.head = head
        self.count, self.prev_hash, self.position, self.horizon = 0, GENESIS_HASH, (0, 0), 0

    def check(self, link: Seal) -> Problem | None:
        problem = self._link_problem(link) or self._event_problem(link) or self._head_problem(link)
        if problem is None:
            self.count, self.prev_hash, self.horizon = link.seq, link.hash, link.horizon
            self.position = (link.event["xid"], link.event_id)
        return problem

    def finish(self) -> Problem | None:
        if self.head and self.head[0] > self.count:
            return Problem("head_mismatch", f"the chain ends at seq {self.count}, before the exported "
                                            f"head's seq {self.head[0]}: seals were removed")
        return None

    def _link_problem(self, link: Seal) -> Problem | None:
        if link.seq != self.count + 1:
            return Problem("broken_link", f"seal {self.count + 1} is missing (the next seal is {link.seq})")
        if link.prev_hash != self.prev_hash:
            return Problem("broken_link", f"seal {link.seq} does not link to seal {self.count}")
        return None

    def _event_problem(self, link: Seal) -> Problem | None:
        if link.event is None:
            return Problem("deleted", f"event {link.event_id} (seal {link.seq}) was deleted")
        if chain_hash(link.prev_hash, link.event) != link.hash:
            return Problem("altered", f"event {link.event_id} (seal {link.seq}) was altered after sealing")
        if (link.event["xid"], link.event_id) <= self.position:
            return Problem("out_of_order", f"event {link.event_id} (seal {link.seq}) is out of chain order")
        return None

    def _head_problem(self, link: Seal) -> Problem | None:
        if self.head and link.seq == self.head[0] and link.hash != self.head[1]:
            return Problem("head_mismatch", f"seal {link.seq} differs from the exported head: the chain "
                                            "was rewritten after the head was exported")
        return None


class BackgroundSealer(Periodic):
    """A daemon thread that seals every ``interval_seconds`` in short units of work of
    ``db`` (a clarity.db.Database). Errors are logged by type only and retried next tick.
    ``chores``: other upkeep run after each seal on the same thread (callables that never
    raise and decide themselves whether they are due), such as purging expired idempotency keys."""

    name = "clarity-audit-sealer"

    def __init__(self, db, interval_seconds: float, chores=()):
        super().__init__(interval_seconds)
        self.db = db
        self.chores = tuple(chores)

    def seal_once(self) -> int | None:
        """One run, as the thread does it; None when it failed or another sealer was at work."""
        try:
            return self.db.run(lambda uow: seal(uow.audit_events))
        except Exception as exc:  # the thread must survive anything; the next tick retries
            # Type only: a driver message could quote values.
            log.warning("audit sealing failed (%s); retrying in %g s", type(exc).__name__, self.interval_seconds)
            return None

    def tick(self) -> None:
        self.seal_once()
        for chore in self.chores:
            chore()


def start_background_sealer(app, interval_seconds: float) -> BackgroundSealer | None:
    """Start sealing in the background with the app's database, and purging expired idempotency
    keys on the same schedule (at most once a minute); None when the interval is 0 (disabled).
    Stop it with ``.stop()`` before closing the pool."""
    if not interval_seconds:
        return None
    db = app.extensions["clarity"].db
    return BackgroundSealer(db, interval_seconds, chores=(Purger(db),)).start()
