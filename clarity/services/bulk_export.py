"""Bulk FHIR export (``flask --app wsgi export patients --out DIR``): every patient's resources
(clarity.services.export) into one NDJSON file per resource type in DIR, patient after patient.

Resumable: the patients to export are listed once, when the export starts (``export-patients.txt``,
in creation order), and after each patient ``export-state.json`` records how many are done and
each file's length at that point. A rerun with the same DIR cuts every file back to those lengths
(dropping the lines of a patient it was writing when it stopped) and goes on after the last
completed patient, so no line is lost or written twice. Patients registered after the start are
not in that export; one deleted since is skipped.

The files hold PHI: they are created mode 600 in a directory made mode 700, and a directory that
holds anything but an export's own files is refused, as is a second export into a directory while
one runs there (an exclusive lock on ``export.lock``, released when the process ends). Each patient is audited as an export
(action E) by the system actor, committed before its lines are written.
"""
from __future__ import annotations

import dataclasses
import fcntl
import itertools
import json
import os
import uuid
from pathlib import Path

import orjson

from clarity.errors import ClarityError, NotFound
from clarity.security.access import PROVIDER
from clarity.services import export
from clarity.services.keys import SYSTEM

STATE, PLAN, LOCK = "export-state.json", "export-patients.txt", "export.lock"
FORMAT = 1


class ExportRefused(ClarityError):
    """The directory cannot hold this export (another's files, another export's state)."""

    status, title = 409, "Conflict"


@dataclasses.dataclass
class State:
    """What export-state.json records: the export's scope, its progress, and each file's length
    (bytes) and line count after the last completed patient."""

    provider_id: str | None
    total: int
    completed: int = 0
    skipped: int = 0
    files: dict = dataclasses.field(default_factory=dict)  # file name -> {"bytes": n, "lines": n}


class BulkExport:
    """An export into ``out``, new or resumed: ``total`` and ``completed`` say where it stands;
    ``run()`` exports the remaining patients."""

    def __init__(self, db, out: Path, state: State, lock=None):
        self.db, self.out, self.state = db, out, state
        self._lock = lock  # the open lock file: the lock lasts as long as it is open

    @property
    def total(self) -> int:
        return self.state.total

    @property
    def completed(self) -> int:
        return self.state.completed

    @classmethod
    def open(cls, db, out: Path, *, provider_id=None) -> "BulkExport":
        """Start an export into ``out`` (created mode 700 when missing) or resume the one it
        holds. ExportRefused when ``out`` holds other files, or another export (another scope)."""
        out = Path(out)
        lock, made = _lock(out)
        try:
            state = _resume(out, provider_id)
            if state is None:
                if provider_id is not None:
                    _require_provider(db, provider_id)
                state = _start(db, out, provider_id)
        except BaseException:
            if made:  # a refused directory is left as it was
                (out / LOCK).unlink(missing_ok=True)
            lock.close()
            raise
        return cls(db, out, state, lock)

    def close(self) -> None:
        """Release the directory for another export (ending the process does too)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def run(self, progress=lambda done: None) -> State:
        """Export the remaining patients; ``progress(1)`` after each. Returns the final state."""
        with (self.out / PLAN).open(encoding="ascii") as plan:
            remaining = itertools.islice((uuid.UUID(line.strip()) for line in plan), self.state.completed, None)
            files = _Files(self.out, self.state.files)
            try:
                for patient_id in remaining:
                    self._export_one(patient_id, files)
                    self.state.completed += 1
                    self.state.files = files.sync()
                    _write_json(self.out / STATE, dataclasses.asdict(self.state))
                    progress(1)
            finally:
                files.close()
        return self.state

    def _export_one(self, patient_id: uuid.UUID, files: "_Files") -> None:
        """Audit, then write the patient's resources; a patient deleted since the export
        started is skipped (NotFound comes before any line is written)."""
        try:
            self.db.run(lambda uow: export.audit_export(uow, SYSTEM, patient_id), actor=SYSTEM)
            with export.snapshot(self.db, SYSTEM) as (uow, reader):
                for resource_type, resource in export.resources(uow, reader, SYSTEM, patient_id):
                    files.write(resource_type, resource)
        except NotFound:
            self.state.skipped += 1


class _Files:
    """The export's NDJSON files, opened (mode 600, appending) on their first line."""

    def __init__(self, out: Path, synced: dict):
        self.out = out
        self.synced = {name: dict(counts) for name, counts in synced.items()}
        self.lines = {name: counts["lines"] for name, counts in self.synced.items()}
        self.open_files, self.dirty = {}, set()

    def write(self, resource_type: str, resource: dict) -> None:
        name = f"{resource_type}.ndjson"
        file = self.open_files.get(name)
        if file is None:
            fd = os.open(self.out / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            file = self.open_files[name] = os.fdopen(fd, "ab")
        file.write(orjson.dumps(resource, option=orjson.OPT_APPEND_NEWLINE))
        self.lines[name] = self.lines.get(name, 0) + 1
        self.dirty.add(name)

    def sync(self) -> dict:
        """Flush and fsync the files written since the last sync (the state written next must
        not claim lines a crash could lose); return every file's length and line count."""
        for name in self.dirty:
            file = self.open_files[name]
            file.flush()
            os.fsync(file.fileno())
            self.synced[name] = {"bytes": os.fstat(file.fileno()).st_size, "lines": self.lines[name]}
        self.dirty.clear()
        return {name: dict(counts) for name, counts in self.synced.items()}

    def close(self) -> None:
        for file in self.open_files.values():
            file.close()


def _own_names() -> set[str]:
    return {STATE, PLAN, LOCK, f"{STATE}.tmp", f"{PLAN}.tmp"} | {f"{t}.ndjson" for t in export.RESOURCE_TYPES}


def _lock(out: Path):
    """Make ``out`` (mode 700) when missing and take its export lock, held while the returned
    file stays open: ``(file, whether the lock file was made now)``. ExportRefused when ``out``
    is not a directory, holds another's files, or another export holds the lock."""
    _refuse_others(out)  # before the lock file is made: a refused directory is left as it was
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    made = not (out / LOCK).exists()
    fd = os.open(out / LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ExportRefused(f"Another export is running into {out}; wait for it to end.") from None
    return os.fdopen(fd, "w"), made


def _resume(out: Path, provider_id) -> State | None:
    """The state of the export ``out`` holds, its files cut back to the state's lengths; None
    when ``out`` is missing or empty. ExportRefused when it holds anything else."""
    names = _refuse_others(out)
    if STATE not in names and names <= {PLAN, LOCK, f"{PLAN}.tmp", f"{STATE}.tmp"}:
        for name in names - {LOCK}:  # stopped while listing the patients: nothing was exported yet
            (out / name).unlink()
        return None
    if STATE not in names or PLAN not in names:
        raise ExportRefused(f"{out} holds export files without their state; give an empty or new directory.")
    saved = json.loads((out / STATE).read_text(encoding="utf-8"))
    if saved.get("format") != FORMAT:
        raise ExportRefused(f"{out} holds an export of another format; use a new directory.")
    state = State(**saved["state"])
    if state.provider_id != (None if provider_id is None else str(provider_id)):
        raise ExportRefused(f"{out} holds an export of other patients (another --provider); use a new directory.")
    missing = [name for name in state.files if name not in names]
    if missing:
        raise ExportRefused(f"{', '.join(sorted(missing))} of the export is missing; start over in a new directory.")
    os.chmod(out, 0o700)
    for name in names - {STATE, PLAN, LOCK}:
        path = out / name
        length = state.files.get(name, {"bytes": 0})["bytes"]
        if not name.endswith(".ndjson") or length == 0:
            path.unlink()
        elif path.stat().st_size < length:
            raise ExportRefused(f"{name} is shorter than the state records (its end was lost); start over "
                                "in a new directory.")
        else:
            os.truncate(path, length)
    return state


def _refuse_others(out: Path) -> set[str]:
    """The names in ``out`` (none when it is missing); ExportRefused when it is not a directory
    or holds anything but an export's own files."""
    if out.exists() and not out.is_dir():
        raise ExportRefused(f"{out} is not a directory.")
    names = {path.name for path in out.iterdir()} if out.exists() else set()
    if names - _own_names():
        raise ExportRefused(f"{out} holds files that are not this export's; give an empty or new directory.")
    return names


def _require_provider(db, provider_id) -> None:
    user = db.run(lambda uow: uow.users.get(provider_id), actor=SYSTEM)
    if user is None or user.role != PROVIDER:
        raise ExportRefused("--provider must name a provider.")


def _start(db, out: Path, provider_id) -> State:
    """List the patients to export (one id a line, written once) and record the new state."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    total = 0
    temporary = out / f"{PLAN}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as plan:
        with export.snapshot(db, SYSTEM) as (_, reader):
            for patient_id in reader.patient_ids(provider_id):
                plan.write(f"{patient_id}\n")
                total += 1
        plan.flush()
        os.fsync(plan.fileno())
    os.replace(temporary, out / PLAN)
    state = State(provider_id=None if provider_id is None else str(provider_id), total=total)
    _write_json(out / STATE, dataclasses.asdict(state))
    return state


def _write_json(path: Path, state: dict) -> None:
    """Replace ``path`` atomically (a temporary file fsynced, then renamed), mode 600."""
    temporary = path.with_name(f"{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump({"format": FORMAT, "state": state}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
