"""The Clarity statements through bare psycopg: one statement per loop turn.

Each loop runs over the caller's autocommit connection (as the app's role). This is the
ceiling the app's data access is compared with: the same SQL text (from ``sql/patients.sql``),
psycopg preparing it after a few runs, and no unit of work, token check, decryption or audit.
"""
from __future__ import annotations

import dataclasses
import random
import time
import uuid

from clarity import queries
from clarity.repositories.patients import BLIND_INDEXED, PHI_COLUMN, TABLE
from bench.seed import patient_phi

CHUNK = 500


@dataclasses.dataclass
class Timing:
    """Statements run, seconds spent inside them, and each one's latency in seconds."""
    count: int = 0
    busy: float = 0.0
    client_cpu: float = 0.0
    latencies: list = dataclasses.field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.count / self.busy if self.busy else 0.0


def _loop(conn, statement: str, make_chunk, seconds: float) -> Timing:
    """Run ``statement`` with the params of successive chunks until ``seconds`` of statement time.

    Chunks are built outside the clock, so only execute + fetch is timed.
    """
    timing = Timing()
    with conn.cursor() as cur:
        while timing.busy < seconds:
            chunk = make_chunk()
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            for params in chunk:
                started = time.perf_counter()
                cur.execute(statement, params)
                cur.fetchone()
                timing.latencies.append(time.perf_counter() - started)
            timing.busy += time.perf_counter() - wall_start
            timing.client_cpu += time.process_time() - cpu_start
            timing.count += len(chunk)
    return timing


def get_patients(conn, ids: list[str], provider_id, seconds: float) -> Timing:
    """``get_patient`` by random ids among ``ids``, as their provider, for ``seconds``."""
    statement = queries.load().patients.get_patient.sql
    rng = random.Random(1)
    scope = {"actor_id": provider_id, "actor_is_admin": False}

    def chunk():
        return [{"id": uuid.UUID(rng.choice(ids)), **scope} for _ in range(CHUNK)]

    return _loop(conn, statement, chunk, seconds)


def insert_patients(conn, keyring, provider_id, seconds: float) -> Timing:
    """``insert_patient`` with payloads sealed beforehand (unique MRNs), for ``seconds``."""
    statement = queries.load().patients.insert_patient.sql
    rng = random.Random(2)
    prefix = uuid.uuid4().hex[:8]
    counter = iter(range(10**9))

    def sealed():
        patient_id = uuid.uuid4()
        phi = patient_phi(rng, f"BARE-{prefix}-{next(counter)}")
        envelope, key_id = keyring.encrypt(TABLE, PHI_COLUMN, patient_id, phi)
        return {"id": patient_id, "provider_id": provider_id, "status": "active",
                "birth_year": int(phi["date_of_birth"][:4]),
                **{f"{f}_bidx{suffix}": keyring.blind_index(TABLE, f, phi.get(f), root=root)
                   for f in BLIND_INDEXED for root, suffix in (("current", ""), ("next", "_next"))},
                "phi": envelope, "phi_key_id": key_id}

    return _loop(conn, statement, lambda: [sealed() for _ in range(CHUNK)], seconds)
