"""Biometric readings: batches stored with COPY through a staging table, keyset pages,
summaries per bucket, the latest per kind, and the monthly partitions of their table."""
from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import NamedTuple

from psycopg import errors as pg
from psycopg.rows import class_row, dict_row

from clarity.errors import Invalid

TABLE = "biometric_readings"
# The staging table's column types, in Reading's field order, for the binary COPY.
STAGING_TYPES = ("text", "float8", "text", "timestamptz", "text")


class Reading(NamedTuple):
    """One reading; a tuple in the staging table's column order, so COPY writes it as is."""

    kind: str
    value: float
    unit: str
    recorded_at: dt.datetime
    source_device: str


@dataclasses.dataclass(frozen=True)
class Stored:
    """What a batch came to: readings inserted (the rest were already stored) and alerts raised."""

    stored: int
    alerts_raised: int


@dataclasses.dataclass(frozen=True)
class Bucket:
    kind: str
    unit: str
    bucket_start: dt.datetime
    count: int
    min: float
    max: float
    avg: float


@dataclasses.dataclass(frozen=True)
class Partition:
    name: str
    starts_at: dt.datetime
    ends_at: dt.datetime


class BiometricRepository:
    def __init__(self, conn, queries):
        self.conn = conn
        self.q = queries

    def add_many(self, patient_id: uuid.UUID, readings) -> Stored:
        """Store ``readings`` (Reading tuples) as the
        patient's, skipping those already stored, and raise their alerts: a COPY into this
        session's (emptied) staging table, then one INSERT … SELECT (sql/biometrics.sql
        insert_biometric_readings). A reading that no partition holds raises Invalid
        (``recorded_at``); other constraint violations leave as driver errors."""
        self.q.create_biometric_staging.execute(self.conn)
        self.q.delete_biometric_staging.rowcount(self.conn)
        with self.q.copy_biometric_staging.copy(self.conn) as copy:
            copy.set_types(STAGING_TYPES)
            for reading in readings:
                copy.write_row(reading)
        try:
            row = self.q.insert_biometric_readings.one(self.conn, {"patient_id": patient_id}, dict_row)
        except pg.CheckViolation as exc:
            # "no partition of relation … found for row": no constraint name, the parent's table name.
            if exc.diag.constraint_name is None and exc.diag.table_name == TABLE:
                raise Invalid("recorded_at out of range: no partition holds it.", field="recorded_at") from exc
            raise
        return Stored(stored=row["stored"], alerts_raised=row["alerts_raised"])

    def list(self, patient_id, *, kinds, recorded_from=None, recorded_to=None, after=None,
             limit: int = 50) -> list[Reading]:
        """A keyset page of the patient's readings of ``kinds`` (every kind for all of them),
        newest first; ``after`` is the ``(recorded_at, kind, source_device)`` of the last reading
        of the previous page."""
        after_recorded_at, after_kind, after_device = after or (None, None, None)
        return self.q.list_biometric_readings.all(self.conn, {
            "patient_id": patient_id, "kinds": list(kinds), "recorded_from": recorded_from,
            "recorded_to": recorded_to, "after_recorded_at": after_recorded_at,
            "after_kind": after_kind, "after_source_device": after_device, "limit": limit,
        }, class_row(Reading))

    def summary(self, patient_id, *, kinds, bucket: str, recorded_from, recorded_to) -> list[Bucket]:
        """count/min/max/avg per kind of ``kinds`` and UTC ``bucket`` ('hour' or 'day'), oldest first."""
        return self.q.list_biometric_summary.all(self.conn, {
            "patient_id": patient_id, "kinds": list(kinds), "bucket": bucket,
            "recorded_from": recorded_from, "recorded_to": recorded_to,
        }, class_row(Bucket))

    def latest(self, patient_id, kinds) -> list[Reading]:
        """The latest reading of each of ``kinds`` that the patient has, by kind."""
        return self.q.list_biometric_latest.all(self.conn, {"patient_id": patient_id, "kinds": list(kinds)},
                                                class_row(Reading))

    def create_partitions(self, *, months_back: int, months_ahead: int) -> int:
        """Create the missing monthly partitions (as the table's owner); return how many."""
        return self.q.create_biometric_partitions.value(self.conn, {
            "months_back": months_back, "months_ahead": months_ahead})

    def partitions(self) -> list[Partition]:
        return self.q.list_biometric_partitions.all(self.conn, None, class_row(Partition))
