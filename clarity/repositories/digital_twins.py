"""Digital twins: one configuration per patient, kept as append-only versions."""
from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from psycopg import errors as pg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

# Either means "that version is not the next one": taken by someone else (primary key), or
# its predecessor does not exist (contiguity foreign key).
_NOT_NEXT = {"digital_twin_versions_pkey", "digital_twin_versions_prev_version_fkey"}


@dataclasses.dataclass(frozen=True)
class TwinVersion:
    patient_id: uuid.UUID
    version: int
    config: dict
    created_by: uuid.UUID
    created_at: dt.datetime


class DigitalTwinRepository:
    def __init__(self, conn, queries):
        self.conn = conn
        self.q = queries

    def current(self, patient_id) -> TwinVersion | None:
        """The highest version, or None when the patient has no twin yet."""
        return self.q.get_digital_twin_version.one(self.conn, {"patient_id": patient_id}, class_row(TwinVersion))

    def versions(self, patient_id, *, before_version=None, limit=50) -> list[TwinVersion]:
        """Versions newest first, below ``before_version`` (None: from the newest)."""
        return self.q.list_digital_twin_versions.all(self.conn, {
            "patient_id": patient_id, "before_version": before_version, "limit": limit}, class_row(TwinVersion))

    def add(self, patient_id, version: int, config: dict, *, created_by) -> TwinVersion | None:
        """Append ``version`` (the one read plus one; 1 for the first). None when it is not
        the next version: someone else wrote it meanwhile, or the one read is not current.
        The transaction is then aborted: the caller ends its unit of work."""
        try:
            return self.q.insert_digital_twin_version.one(self.conn, {
                "patient_id": patient_id, "version": version, "config": Jsonb(config), "created_by": created_by,
            }, class_row(TwinVersion))
        except (pg.UniqueViolation, pg.ForeignKeyViolation) as exc:
            if exc.diag.constraint_name in _NOT_NEXT:
                return None
            raise
