"""Patients: PHI sealed in one envelope per row, blind indexes for lookups."""
from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from psycopg.rows import dict_row

from clarity.errors import DecryptionError
from clarity.security.crypto import normalize, reencrypt_rows

TABLE, PHI_COLUMN = "patients", "phi"
BLIND_INDEXED = ("mrn", "email", "last_name")


@dataclasses.dataclass(frozen=True)
class Patient:
    id: uuid.UUID
    provider_id: uuid.UUID
    status: str
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    phi: dict


class PatientRepository:
    def __init__(self, conn, queries, keyring):
        self.conn = conn
        self.q = queries
        self.keyring = keyring

    def get(self, patient_id, actor) -> Patient | None:
        """The live patient if the actor may see it; None otherwise (absent or out of scope)."""
        row = self.q.get_patient.one(self.conn, {"id": patient_id, **actor.scope()}, dict_row)
        return None if row is None else self._from_row(row)

    def get_overview(self, patient_id, actor, *, kinds) -> tuple[Patient, dict] | None:
        """The patient and its clinical summary from one statement: (patient, {latest_readings,
        open_alerts, next_appointment, digital_twin}); None when not visible."""
        row = self.q.get_patient_overview.one(self.conn, {"id": patient_id, **actor.scope(), "kinds": list(kinds)},
                                              dict_row)
        if row is None:
            return None
        summary = {key: row.pop(key) for key in ("latest_readings", "open_alerts", "next_appointment", "digital_twin")}
        return self._from_row(row), summary

    def get_access(self, patient_id, actor) -> dict | None:
        """``{"id", "provider_id"}`` of the live patient if the actor may see it, else None;
        reads no PHI (for sub-resources: biometrics, appointments, records...)."""
        return self.q.get_patient_access.one(self.conn, {"id": patient_id, **actor.scope()}, dict_row)

    def list(self, actor, *, status=None, birth_year_from=None, birth_year_to=None,
             mrn=None, email=None, last_name=None, after=None, limit=50) -> list[Patient]:
        """A keyset page of the actor's live patients; MRN, email and last name go through
        their blind index, then the decrypted candidates are compared (no false positives)."""
        after_created_at, after_id = after or (None, None)
        wanted = {"mrn": mrn, "email": email, "last_name": last_name}
        rows = self.q.list_patients.all(self.conn, {
            **actor.scope(), "status": status,
            "birth_year_from": birth_year_from, "birth_year_to": birth_year_to,
            **{f"{field}_bidx": self.keyring.lookup_indexes(TABLE, field, value) for field, value in wanted.items()},
            "after_created_at": after_created_at, "after_id": after_id, "limit": limit,
        }, dict_row)
        patients = [self._from_row(row) for row in rows]
        checks = {field: normalize(value) for field, value in wanted.items() if value is not None}
        return [p for p in patients
                if all(normalize(p.phi.get(f) or "") == v for f, v in checks.items())]

    def add(self, *, provider_id, status, phi: dict) -> Patient:
        patient_id = uuid.uuid4()
        row = self.q.insert_patient.one(self.conn, {
            "id": patient_id, "provider_id": provider_id, "status": status,
            **self._sealed(patient_id, phi),
        }, dict_row)
        return self._from_row(row)

    def update(self, patient_id, version, actor, *, status, phi: dict) -> Patient | None:
        """Replace status and PHI when ``version`` matches; None when it does not."""
        row = self.q.update_patient.one(self.conn, {
            "id": patient_id, "version": version, **actor.scope(), "status": status,
            **self._sealed(patient_id, phi),
        }, dict_row)
        return None if row is None else self._from_row(row)

    def delete(self, patient_id, version, actor) -> bool:
        """Soft-delete when ``version`` matches; False when it does not."""
        return self.q.delete_patient.rowcount(self.conn, {
            "id": patient_id, "version": version, **actor.scope(),
        }) == 1

    def count_not_under_active_key(self) -> int:
        return self.q.count_patients_not_under_key.value(self.conn, {"key_id": self.keyring.active_key_id})

    def reencrypt_batch(self, *, after_id=None, limit: int) -> tuple[list, list, object]:
        """Re-encipher up to ``limit`` patients not under the active key, in id order after
        ``after_id``. Returns (rotated ids, ids that failed to decrypt, last id seen or None).
        A patient updated concurrently is left alone: its writer used the active key."""
        rows = self.q.list_patients_not_under_key.all(self.conn, {
            "key_id": self.keyring.active_key_id, "after_id": after_id, "limit": limit}, dict_row)
        params, failed = reencrypt_rows(self.keyring, TABLE, PHI_COLUMN, rows, key_id_column="phi_key_id", carry=("version",))
        rotated = [r[0] for r in self.q.update_patient_envelopes.all(self.conn, params)] if params else []
        return rotated, failed, (rows[-1]["id"] if rows else None)

    def count_without_next_index(self) -> int:
        return self.q.count_patients_without_next_index.value(self.conn)

    def count_with_next_index(self) -> int:
        return self.q.count_patients_with_next_index.value(self.conn)

    def reindex_batch(self, *, without_next_only: bool, after_id=None, limit: int) -> tuple[list, list, object]:
        """Recompute the blind indexes of up to ``limit`` patients (all, or those lacking
        next-key indexes) under the configured keys, in id order after ``after_id``:
        (reindexed ids, ids that failed to decrypt, last id or None). A patient updated
        meanwhile is skipped: its writer computed them."""
        rows = self.q.list_patients_for_reindex.all(self.conn, {
            "without_next_only": without_next_only, "after_id": after_id, "limit": limit}, dict_row)
        computed, failed = [], []
        for row in rows:
            try:
                phi = self.keyring.decrypt(TABLE, PHI_COLUMN, row["id"], row["phi"], row["phi_key_id"])
            except DecryptionError:
                failed.append(row["id"])
                continue
            computed.append((row, {**self._indexes(phi), **self._indexes(phi, root="next", suffix="_next")}))
        columns = [f"{field}_bidx{suffix}" for suffix in ("", "_next") for field in BLIND_INDEXED]
        done = [r[0] for r in self.q.update_patient_indexes.all(self.conn, {
            "ids": [row["id"] for row, _ in computed], "versions": [row["version"] for row, _ in computed],
            **{column: [indexes[column] for _, indexes in computed] for column in columns},
        })] if computed else []
        return done, failed, (rows[-1]["id"] if rows else None)

    def _sealed(self, patient_id, phi: dict) -> dict:
        envelope, key_id = self.keyring.encrypt(TABLE, PHI_COLUMN, patient_id, phi)
        return {
            "birth_year": int(phi["date_of_birth"][:4]),
            **self._indexes(phi), **self._indexes(phi, root="next", suffix="_next"),
            "phi": envelope, "phi_key_id": key_id,
        }

    def _indexes(self, phi: dict, *, root="current", suffix="") -> dict:
        return {f"{field}_bidx{suffix}": self.keyring.blind_index(TABLE, field, phi.get(field), root=root)
                for field in BLIND_INDEXED}

    def _from_row(self, row) -> Patient:
        phi = self.keyring.decrypt(TABLE, PHI_COLUMN, row["id"], row["phi"], row["phi_key_id"])
        return Patient(id=row["id"], provider_id=row["provider_id"], status=row["status"],
                       version=row["version"], created_at=row["created_at"],
                       updated_at=row["updated_at"], phi=phi)
