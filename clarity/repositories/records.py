"""Medical records: the body is sealed in one envelope per row, bound to the row's id."""
from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from psycopg.rows import dict_row

from clarity.errors import violation
from clarity.security.crypto import reencrypt_rows

TABLE, BODY_COLUMN = "medical_records", "body"
SAME_PATIENT_AND_TYPE = "medical_records_amends_id_fkey"


@dataclasses.dataclass(frozen=True)
class Record:
    id: uuid.UUID
    patient_id: uuid.UUID
    type: str
    body: dict
    author_id: uuid.UUID
    recorded_at: dt.datetime
    created_at: dt.datetime
    amends_id: uuid.UUID | None
    superseded_by: uuid.UUID | None  # the record amending this one; None for the latest version


@dataclasses.dataclass(frozen=True)
class Chain:
    """A record and every version of it, the original first."""

    record: Record
    versions: list[Record]
    provider_id: uuid.UUID  # the patient's provider, for the emergency-access audit


class RecordRepository:
    def __init__(self, conn, queries, keyring):
        self.conn = conn
        self.q = queries
        self.keyring = keyring

    def add(self, *, patient_id, type: str, body: dict, author_id, recorded_at=None, amends_id=None) -> Record:
        """Add a record. Raises Invalid (``amends_id``) when the query's guard finds no record of
        the same patient and type to amend. The constraints behind the guard raise driver errors
        that the unit of work translates (errors.CONSTRAINTS): medical_records_amends_id_fkey
        (Invalid, as the guard) and medical_records_amends_id_key (Conflict: that record was
        already amended; amend its latest version)."""
        record_id = uuid.uuid4()
        envelope, key_id = self.keyring.encrypt(TABLE, BODY_COLUMN, record_id, body)
        row = self.q.insert_medical_record.one(self.conn, {
            "id": record_id, "patient_id": patient_id, "type": type, "body": envelope,
            "body_key_id": key_id, "author_id": author_id, "recorded_at": recorded_at,
            "amends_id": amends_id,
        }, dict_row)
        if row is None:
            raise violation(SAME_PATIENT_AND_TYPE)
        return self._from_row(row)

    def list(self, patient_id, *, type=None, current_only=False, before=None, limit=50) -> list[Record]:
        """A keyset page of a patient's records, newest recorded first, before the position
        ``before`` (recorded_at, id). The caller checks the patient is the actor's."""
        before_recorded_at, before_id = before or (None, None)
        rows = self.q.list_medical_records.all(self.conn, {
            "patient_id": patient_id, "type": type, "current_only": current_only,
            "before_recorded_at": before_recorded_at, "before_id": before_id, "limit": limit,
        }, dict_row)
        return [self._from_row(row) for row in rows]

    def get_chain(self, record_id, actor) -> Chain | None:
        """The record with its amendment chain if the actor may see its patient; else None."""
        rows = self.q.list_medical_record_chain.all(self.conn, {"id": record_id, **actor.scope()}, dict_row)
        if not rows:
            return None
        versions = [self._from_row(row) for row in rows]
        record = next(v for v, row in zip(versions, rows) if row["position"] == 0)
        return Chain(record=record, versions=versions, provider_id=rows[0]["provider_id"])

    def count_not_under_active_key(self) -> int:
        return self.q.count_medical_records_not_under_key.value(self.conn, {"key_id": self.keyring.active_key_id})

    def reencrypt_batch(self, *, after_id=None, limit: int) -> tuple[list, list, object]:
        """Re-encipher up to ``limit`` bodies not under the active key, in id order after
        ``after_id``: (rotated ids, ids that failed to decrypt, last id seen or None)."""
        rows = self.q.list_medical_records_not_under_key.all(self.conn, {
            "key_id": self.keyring.active_key_id, "after_id": after_id, "limit": limit}, dict_row)
        params, failed = reencrypt_rows(self.keyring, TABLE, BODY_COLUMN, rows, key_id_column="body_key_id")
        rotated = [r[0] for r in self.q.update_medical_record_bodies.all(self.conn, params)] if params else []
        return rotated, failed, (rows[-1]["id"] if rows else None)

    def _from_row(self, row) -> Record:
        body = self.keyring.decrypt(TABLE, BODY_COLUMN, row["id"], row["body"], row["body_key_id"])
        return Record(id=row["id"], patient_id=row["patient_id"], type=row["type"], body=body,
                      author_id=row["author_id"], recorded_at=row["recorded_at"], created_at=row["created_at"],
                      amends_id=row["amends_id"], superseded_by=row["superseded_by"])
