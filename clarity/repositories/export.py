"""The reads of a patient's FHIR export: every row of a kind through a server-side cursor
(sql/export.sql), fetched ITERSIZE rows at a time, so memory stays bounded however long the
patient's history is. Record bodies and document metadata are deciphered row by row as they
stream."""
from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Iterator, NamedTuple

from psycopg.rows import class_row, dict_row

from clarity.repositories.alerts import Alert
from clarity.repositories.appointments import Appointment
from clarity.repositories.documents import Document, document_from_row
from clarity.repositories.records import BODY_COLUMN, TABLE as RECORDS

ITERSIZE = 1000


class StoredReading(NamedTuple):
    """A biometric reading as stored (a tuple: a million of them stream through the export)."""

    kind: str
    value: float
    unit: str
    recorded_at: dt.datetime
    source_device: str
    received_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class CurrentRecord:
    """The current version of a medical record, under its chain's original id."""

    id: uuid.UUID  # the chain's original: stable however often the record is amended
    versions: int  # 1 for a record never amended
    version_id: uuid.UUID  # the current version's own id (GET /api/v1/records/{id})
    type: str
    body: dict
    author_id: uuid.UUID
    recorded_at: dt.datetime
    created_at: dt.datetime


def _tuples_of(cls):
    """A psycopg row factory making ``cls`` (a NamedTuple) of each row, positionally."""
    return lambda cursor: cls._make


class ExportRepository:
    def __init__(self, conn, queries, keyring, itersize: int = ITERSIZE):
        self.conn = conn
        self.q = queries
        self.keyring = keyring
        self.itersize = itersize

    def readings(self, patient_id) -> Iterator[StoredReading]:
        """Every reading of the patient, oldest first."""
        return self.q.list_export_biometric_readings.stream(
            self.conn, {"patient_id": patient_id}, _tuples_of(StoredReading), self.itersize)

    def records(self, patient_id, type: str) -> Iterator[CurrentRecord]:
        """The current version of each of the patient's records of ``type``, by clinical time."""
        rows = self.q.list_export_medical_records.stream(
            self.conn, {"patient_id": patient_id, "type": type}, dict_row, self.itersize)
        for row in rows:
            body = self.keyring.decrypt(RECORDS, BODY_COLUMN, row["id"], row["body"], row["body_key_id"])
            yield CurrentRecord(id=row["root_id"], versions=row["versions"], version_id=row["id"],
                                type=row["type"], body=body, author_id=row["author_id"],
                                recorded_at=row["recorded_at"], created_at=row["created_at"])

    def appointments(self, patient_id) -> Iterator[Appointment]:
        """Every appointment of the patient, by start time."""
        return self.q.list_export_appointments.stream(
            self.conn, {"patient_id": patient_id}, class_row(Appointment), self.itersize)

    def alerts(self, patient_id) -> Iterator[Alert]:
        """Every alert of the patient, by the time of the reading that raised it."""
        return self.q.list_export_alerts.stream(
            self.conn, {"patient_id": patient_id}, class_row(Alert), self.itersize)

    def documents(self, patient_id) -> Iterator[Document]:
        """The patient's live documents (metadata only), in upload order."""
        rows = self.q.list_export_documents.stream(self.conn, {"patient_id": patient_id}, dict_row, self.itersize)
        return (document_from_row(self.keyring, row) for row in rows)

    def patient_ids(self, provider_id=None) -> Iterator[uuid.UUID]:
        """The ids of the live patients, all or ``provider_id``'s, in creation order."""
        rows = self.q.list_export_patient_ids.stream(self.conn, {"provider_id": provider_id}, None, self.itersize)
        return (row[0] for row in rows)
