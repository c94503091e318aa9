"""Read replicas: the heavy reads (lists, searches, summaries) on a streaming replica while it
is reachable and within its lag limit, else on the primary (README, "Read replicas").

``Database`` holds a ``Replica`` when ``CLARITY_DATABASE_REPLICA_URL`` is set; a unit of work's
``reads`` (clarity.db) hands its services ``Reads``: the repositories of those reads on a replica
connection in a READ ONLY transaction carrying the unit's actor context.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from functools import cached_property

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from clarity import metrics
from clarity.repositories.audit import AuditRepository
from clarity.repositories.biometrics import BiometricRepository
from clarity.repositories.patients import PatientRepository

log = logging.getLogger(__name__)

# A read replica that cannot be reached costs one request at most this wait for a connection,
# and then its reads go to the primary for REPLICA_RETRY_SECONDS without trying it.
REPLICA_CHECKOUT_TIMEOUT_SECONDS = 0.5
REPLICA_RETRY_SECONDS = 5.0
# The replica's lag is measured at most this often per process: not a round trip per request.
REPLICA_LAG_CACHE_SECONDS = 1.0


class Replica:
    """A read replica's pool, and whether reads may go to it now (decided per process).

    They may not for REPLICA_RETRY_SECONDS after it could not be reached, nor while its lag
    (sql/replica.sql, measured at most every REPLICA_LAG_CACHE_SECONDS) is unknown or over
    ``settings.replica_max_lag_seconds``: their callers then read on the primary.
    """

    def __init__(self, db, conninfo: str):
        self.db, self.conninfo = db, conninfo
        self.max_lag = db.settings.replica_max_lag_seconds
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()
        self._skip_until = float("-inf")
        self._lag: float | None = None
        self._lag_measured_at = float("-inf")

    def open(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = self.db._make_pool(self.conninfo, "clarity-replica", configure=_read_only)
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def begin(self, stack: contextlib.ExitStack, actor_context: dict):
        """A replica connection in a READ ONLY transaction of its own with ``actor_context``
        set (sql/context.sql), held until ``stack`` closes (then rolled back and returned to
        the pool); None when the reads should go to the primary. Never raises for the
        replica's state: a failure to reach it is logged and makes it skipped for a while."""
        now = time.monotonic()
        fresh = now - self._lag_measured_at < REPLICA_LAG_CACHE_SECONDS
        if now < self._skip_until or (fresh and not self._lag_within_limit()):
            return None
        held = contextlib.ExitStack()
        try:
            conn = held.enter_context(self.open().connection(timeout=REPLICA_CHECKOUT_TIMEOUT_SECONDS))
            if not fresh:
                self._measure_lag(conn)
            if not self._lag_within_limit():
                held.close()
                return None
            held.enter_context(conn.transaction(force_rollback=True))
            self.db.queries.context.set_actor_context.value(conn, actor_context)
        except (PoolTimeout, psycopg.Error) as exc:
            held.__exit__(type(exc), exc, exc.__traceback__)
            self._failed(exc)
            return None
        stack.callback(self._release, held, conn)
        return conn

    def _release(self, held: contextlib.ExitStack, conn) -> None:
        held.close()
        self.db.mark_returned(conn)
        if conn.broken:  # it died under a read: skip it rather than fail the next one too
            self._failed(psycopg.OperationalError("the connection broke"))

    def _measure_lag(self, conn) -> None:
        was_within = self._lag_within_limit()
        self._lag = self.db.queries.replica.get_replica_lag.value(conn)
        self._lag_measured_at = time.monotonic()
        metrics.observe_replica_lag(self._lag)
        if was_within and not self._lag_within_limit():
            log.warning("the read replica lags %s s (limit %s s); reads go to the primary",
                        "an unknown number of" if self._lag is None else f"{self._lag:.1f}", self.max_lag)

    def _lag_within_limit(self) -> bool:
        return self._lag is not None and self._lag <= self.max_lag

    def _failed(self, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + REPLICA_RETRY_SECONDS
        self._lag, self._lag_measured_at = None, float("-inf")
        metrics.observe_replica_lag(None)
        log.warning("the read replica is unusable (%s); reads go to the primary for %g s",
                    type(exc).__name__, REPLICA_RETRY_SECONDS)


def _read_only(conn) -> None:
    """Replica connections start their transactions with BEGIN READ ONLY."""
    conn.read_only = True


class Reads:
    """UnitOfWork.reads on a replica connection: the repositories of the heavy reads."""

    def __init__(self, conn, unit):
        self.conn, self._unit = conn, unit

    @cached_property
    def patients(self) -> PatientRepository:
        return PatientRepository(self.conn, self._unit.queries.patients, self._unit._keyring())

    @cached_property
    def biometrics(self) -> BiometricRepository:
        return BiometricRepository(self.conn, self._unit.queries.biometrics)

    @cached_property
    def audit_events(self) -> AuditRepository:
        return AuditRepository(self.conn, self._unit.queries.audit)
