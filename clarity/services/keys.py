"""Key rotation without downtime: data keys, and blind-index keys.

Every batch is a unit of work of its own, so a crash loses at most the batch in flight and a
rerun resumes from what the rows say. A row updated while it is being processed is left alone:
the update's version check makes the batch's write miss, and the writer used the current
configuration anyway; a later pass picks up any row an instance on an older configuration wrote.

Blind-index keys rotate in three steps (README: key rotation runbook): with a next key
configured every write also fills the ``*_next`` columns and ``rebuild_blind_indexes`` fills
them for the older rows; then the next key is promoted to current; ``switch_blind_indexes``
recomputes every row's main indexes under it and clears the ``*_next`` columns. Lookups match
both columns under every configured key, so each step is readable throughout.
"""
from __future__ import annotations

import dataclasses
import uuid

from clarity.audit import UPDATE, AuditEvent
from clarity.errors import ClarityError
from clarity.security.access import ADMIN, Actor

# Maintenance commands act as this actor: the admin role lets row-level security show every
# row; the nil id marks the audit events as the system's.
SYSTEM = Actor(id=uuid.UUID(int=0), role=ADMIN)
MAX_PASSES = 5


class RotationRefused(ClarityError):
    """The configuration does not fit the requested step."""

    status, title = 409, "Conflict"


@dataclasses.dataclass
class Report:
    done: int = 0
    failed: set = dataclasses.field(default_factory=set)  # ids whose envelope did not decrypt
    remaining: int = 0  # rows still to do when the command stopped


def rotate_data_keys(db, *, batch_size=500, progress=lambda text: None, max_batches=None) -> Report:
    """Re-encipher patients, emergency-access reasons, medical-record bodies and documents (their
    metadata envelope and every chunk of their content) not under the active data key.

    A document is a unit of work of its own, whatever ``batch_size``: its chunks and key id
    change together, and a 25 MiB document is already 400 chunks.
    ``progress`` gets a line after every batch; ``max_batches`` stops early (a rerun
    finishes); ``failed`` lists rows that did not decrypt (their key is missing or wrong).
    """
    report, budget = Report(), _Budget(max_batches)
    for kind, entity, fields, per_unit in (("patients", "patient", ("phi",), batch_size),
                                           ("emergency_access", "emergency_access", ("reason",), batch_size),
                                           ("records", "medical_record", ("body",), batch_size),
                                           ("documents", "document", ("meta", "content"), 1)):
        def step(uow, after, kind=kind, entity=entity, fields=fields, per_unit=per_unit):
            done, failed, last = getattr(uow, kind).reencrypt_batch(after_id=after, limit=per_unit)
            for row_id in done:
                uow.audit(AuditEvent(UPDATE, f"{entity}.reencrypt", entity, row_id,
                                     row_id if entity == "patient" else None, fields=fields))
            return done, failed, last
        _run_passes(db, step, report, budget, progress, f"{kind} re-enciphered")
    report.remaining = db.run(lambda uow: uow.patients.count_not_under_active_key()
                              + uow.emergency_access.count_not_under_active_key()
                              + uow.records.count_not_under_active_key()
                              + uow.documents.count_not_under_active_key(), actor=SYSTEM)
    return report


def rebuild_blind_indexes(db, *, batch_size=500, progress=lambda text: None, max_batches=None) -> Report:
    """Fill the next-key blind indexes of every patient lacking them (a next key must be set)."""
    if not db.keyring.rotating_blind_index:
        raise RotationRefused("Set CLARITY_BLIND_INDEX_NEXT_KEY before rebuilding the blind indexes.")
    report = _reindex(db, True, batch_size, progress, _Budget(max_batches))
    report.remaining = db.run(lambda uow: uow.patients.count_without_next_index(), actor=SYSTEM)
    return report


def switch_blind_indexes(db, *, batch_size=500, progress=lambda text: None, max_batches=None) -> Report:
    """After the next key was promoted to current (and no next key is set): recompute every
    patient's main blind indexes under it and clear the ``*_next`` columns."""
    if db.keyring.rotating_blind_index:
        raise RotationRefused("Promote CLARITY_BLIND_INDEX_NEXT_KEY to CLARITY_BLIND_INDEX_KEY and unset it first.")
    report = _reindex(db, False, batch_size, progress, _Budget(max_batches))
    report.remaining = db.run(lambda uow: uow.patients.count_with_next_index(), actor=SYSTEM)
    return report


def _reindex(db, without_next_only, batch_size, progress, budget) -> Report:
    report = Report()

    def step(uow, after):
        done, failed, last = uow.patients.reindex_batch(without_next_only=without_next_only, after_id=after,
                                                        limit=batch_size)
        for row_id in done:
            uow.audit(AuditEvent(UPDATE, "patient.reindex", "patient", row_id, row_id, fields=("phi",)))
        return done, failed, last

    _run_passes(db, step, report, budget, progress, "patients reindexed", passes=1 if not without_next_only else MAX_PASSES)
    return report


@dataclasses.dataclass
class _Budget:
    limit: int | None
    used: int = 0

    @property
    def spent(self) -> bool:
        return self.limit is not None and self.used >= self.limit


def _run_passes(db, step, report, budget, progress, label, passes=MAX_PASSES) -> None:
    """Run ``step(uow, after)`` batch after batch over the rows (a pass), and passes again while
    the last one changed anything (rows an older configuration wrote meanwhile)."""
    for _ in range(passes):
        after, changed = None, 0
        while not budget.spent:
            done, failed, after = db.run(lambda uow: step(uow, after), actor=SYSTEM)
            budget.used += 1
            report.done += len(done)
            report.failed.update(failed)
            changed += len(done)
            progress(f"{label}: {report.done}, failed: {len(report.failed)}")
            if after is None:
                break
        if not changed or budget.spent:
            return
