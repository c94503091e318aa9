"""Emergency-access grants: the reason is sealed like PHI, bound to its row."""
from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from psycopg.errors import ForeignKeyViolation
from psycopg.rows import dict_row

from clarity.security.crypto import reencrypt_rows

TABLE, REASON_COLUMN = "emergency_access_grants", "reason"


@dataclasses.dataclass(frozen=True)
class Grant:
    id: uuid.UUID
    patient_id: uuid.UUID
    provider_id: uuid.UUID
    reason: str
    granted_at: dt.datetime
    expires_at: dt.datetime


class EmergencyAccessRepository:
    def __init__(self, conn, queries, keyring):
        self.conn = conn
        self.q = queries
        self.keyring = keyring

    def add(self, *, patient_id, provider_id, reason: str, minutes: int) -> Grant | None:
        """Record a grant valid for ``minutes``; None when there is no such patient."""
        grant_id = uuid.uuid4()
        envelope, key_id = self.keyring.encrypt(TABLE, REASON_COLUMN, grant_id, {"reason": reason})
        try:
            # A savepoint, so an unknown patient leaves the transaction usable for its audit.
            with self.conn.transaction():
                row = self.q.insert_emergency_access_grant.one(self.conn, {
                    "id": grant_id, "patient_id": patient_id, "provider_id": provider_id,
                    "reason": envelope, "reason_key_id": key_id, "minutes": minutes,
                }, dict_row)
        except ForeignKeyViolation:
            return None
        return self._from_row(row)

    def list(self, *, active_only: bool, before=None, limit: int = 50) -> list[Grant]:
        """Grants newest first, after the keyset position ``before`` (granted_at, id)."""
        before_granted_at, before_id = before or (None, None)
        rows = self.q.list_emergency_access_grants.all(self.conn, {
            "active_only": active_only, "before_granted_at": before_granted_at,
            "before_id": before_id, "limit": limit,
        }, dict_row)
        return [self._from_row(row) for row in rows]

    def count_not_under_active_key(self) -> int:
        return self.q.count_emergency_access_grants_not_under_key.value(
            self.conn, {"key_id": self.keyring.active_key_id})

    def reencrypt_batch(self, *, after_id=None, limit: int) -> tuple[list, list, object]:
        """Re-encipher up to ``limit`` reasons not under the active key, in id order after
        ``after_id``: (rotated ids, ids that failed to decrypt, last id seen or None)."""
        rows = self.q.list_emergency_access_grants_not_under_key.all(self.conn, {
            "key_id": self.keyring.active_key_id, "after_id": after_id, "limit": limit}, dict_row)
        params, failed = reencrypt_rows(self.keyring, TABLE, REASON_COLUMN, rows, key_id_column="reason_key_id")
        rotated = [r[0] for r in self.q.update_emergency_access_grant_reasons.all(self.conn, params)] if params else []
        return rotated, failed, (rows[-1]["id"] if rows else None)

    def _from_row(self, row) -> Grant:
        reason = self.keyring.decrypt(TABLE, REASON_COLUMN, row["id"], row["reason"], row["reason_key_id"])["reason"]
        return Grant(id=row["id"], patient_id=row["patient_id"], provider_id=row["provider_id"],
                     reason=reason, granted_at=row["granted_at"], expires_at=row["expires_at"])
