"""Connection pool lifecycle and the unit of work.

The pool is opened after gunicorn forks (``post_worker_init``) or lazily on first use; a unit
of work holds one pooled connection and one transaction, and nested units become savepoints.
"""
from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import weakref
from pathlib import Path
from functools import cached_property

import psycopg
from psycopg import errors as pg
from psycopg_pool import ConnectionPool

from clarity import audit, errors, metrics
from clarity.replica import Reads, Replica
from clarity.repositories.alerts import AlertRepository
from clarity.repositories.appointments import AppointmentRepository
from clarity.repositories.audit import AuditRepository
from clarity.repositories.biometrics import BiometricRepository
from clarity.repositories.digital_twins import DigitalTwinRepository
from clarity.repositories.documents import DocumentRepository
from clarity.repositories.emergency_access import EmergencyAccessRepository
from clarity.repositories.idempotency import IdempotencyRepository
from clarity.repositories.patients import PatientRepository
from clarity.repositories.records import RecordRepository
from clarity.repositories.users import TokenRepository, UserRepository

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# The outermost open unit of work of each connection; nested units hand it their hooks.
_OPEN_UNITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
RETRYABLE = (pg.SerializationFailure, pg.DeadlockDetected)
MAX_ATTEMPTS = 4
IDLE_CHECK_SECONDS = 2.0
# How long each of the pool's background attempts at a new connection keeps retrying, with its
# exponential backoff (1, 2, 4, 8 ... s apart), before it gives up; see Database.open.
RECONNECT_TIMEOUT_SECONDS = 5.0


class Database:
    """Owns the pool. ``connection()`` yields a connection for one unit of work."""

    def __init__(self, settings, queries, keyring):
        self.settings = settings
        self.queries = queries
        self.keyring = keyring
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()
        self._fixed_connection = None
        self._returned_at: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.replica = Replica(self, settings.database_replica_url) if settings.database_replica_url else None

    def open(self, wait: bool = False) -> ConnectionPool:
        """Open the pool (and the read replica's, when configured) if not open yet (idempotent);
        return the primary's."""
        with self._lock:
            if self._pool is None:
                self._pool = self._make_pool(self.settings.conninfo, "clarity")
        if self.replica is not None:
            self.replica.open()
        if wait:
            self._pool.wait(timeout=self.settings.pool_timeout)
        return self._pool

    def _make_pool(self, conninfo: str, name: str, configure=None) -> ConnectionPool:
        """A pool on ``conninfo`` with the settings' options, opened without waiting."""
        s = self.settings
        pool = ConnectionPool(
            conninfo,
            open=False,
            min_size=s.pool_min_size,
            max_size=s.pool_max_size,
            timeout=s.pool_timeout,
            max_lifetime=s.pool_max_lifetime,
            max_idle=s.pool_max_idle,
            # After a failover (or a restart) the attempts' backoff would grow with the
            # outage: after 17 s without a primary the next attempt came 11 s after the
            # promotion. Given up after a few seconds, an attempt is started afresh by
            # the next request that waits, so one follows the primary's return within
            # seconds (tests/e2e/test_failover.py).
            reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
            # No reset callback: psycopg_pool runs one in a worker thread, so every return of a
            # connection became a thread handoff; returns are noted in connection() instead.
            check=self._check_if_idle,
            configure=configure,
            kwargs={
                "autocommit": True,
                "application_name": "clarity",
                "connect_timeout": max(1, int(s.pool_timeout)),
                **s.session_options(s.statement_timeout_ms),
            },
            name=name,
        )
        pool.open(wait=False)
        return pool

    def _check_if_idle(self, conn) -> None:
        """Pool check on checkout, only for connections idle long enough to have gone stale
        (server restart, network drop): a check on every checkout costs a round trip per request."""
        returned = self._returned_at.get(conn)
        if returned is None or time.monotonic() - returned > IDLE_CHECK_SECONDS:
            ConnectionPool.check_connection(conn)

    def mark_returned(self, conn) -> None:
        """Note when ``conn`` went back to its pool, for the idle check on checkout."""
        self._returned_at[conn] = time.monotonic()

    def pool_stats(self) -> dict:
        """psycopg_pool's statistics (``pool_size``, ``pool_available``, ``requests_waiting``, …),
        its counters (``requests_timeouts``, …) since the last call; {} while the pool is closed."""
        pool = self._pool
        return pool.pop_stats() if pool is not None else {}

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
        if self.replica is not None:
            self.replica.close()

    def use_connection(self, conn) -> None:
        """Route every unit of work through ``conn`` (tests: a connection inside a transaction)."""
        self._fixed_connection = conn

    @contextlib.contextmanager
    def connection(self):
        """Yield a connection; PoolTimeout becomes Unavailable (503 with Retry-After)."""
        if self._fixed_connection is not None:
            yield self._fixed_connection
            return
        pool = self._pool or self.open()
        try:
            cm = pool.connection(timeout=self.settings.pool_timeout)
            conn = cm.__enter__()
        except Exception as exc:
            raise (errors.translate(exc) or exc) from exc
        try:
            yield conn
        except BaseException as exc:
            if not cm.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            cm.__exit__(None, None, None)
        finally:
            self.mark_returned(conn)

    def ready(self) -> tuple[bool, str]:
        """Whether the database answers through the pool and every migration file is applied."""
        if self.keyring is None:
            return False, "encryption keys are not configured"
        try:
            with self.connection() as conn:
                applied = {row[0] for row in self.queries.health.list_applied_migrations.all(conn)}
        except (errors.ClarityError, psycopg.Error) as exc:
            return False, f"database unavailable ({type(exc).__name__})"
        pending = migration_ids() - applied
        if pending:
            return False, f"{len(pending)} migration(s) not applied"
        return True, "ok"

    def unit_of_work(self, conn, **context) -> "UnitOfWork":
        return UnitOfWork(conn, self.queries, self.keyring, replica=self.replica, **context)

    def begin(self, **context) -> "UnitOfWork":
        """Check out a connection and open a unit of work on it, for a caller that cannot hold
        a with-block across its steps (a request: authenticated in one hook, its work done in
        the view). Hand it to ``run(work, opened=uow)``, or end it with ``uow.end(exc)``.

        A connection whose backend died while it sat idle in the pool (a restart, an idle
        timeout, pg_terminate_backend) is found dead by the unit's first statement, BEGIN,
        before anything ran: it is discarded, the pool's idle connections are checked (their
        backends usually died together) and the unit starts again on a working one, once, so
        no caller sees an error for it. (On checkout the pool checks only connections idle for
        more than IDLE_CHECK_SECONDS: a check on every checkout costs a round trip.)
        """
        retried = False
        while True:
            stack, conn, nested = contextlib.ExitStack(), None, False
            try:
                conn = stack.enter_context(self.connection())
                nested = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
                uow = stack.enter_context(self.unit_of_work(conn, **context))
            except BaseException as exc:
                stack.__exit__(type(exc), exc, exc.__traceback__)  # the pool discards a broken connection
                dead = isinstance(exc, psycopg.OperationalError) and conn is not None and conn.broken
                if retried or nested or not dead:
                    raise
                log.info("a pooled connection was dead (%s); checking the pool and starting again",
                         type(exc).__name__)
                if self._pool is not None:
                    self._pool.check()
                retried = True
                continue
            uow.ending, uow.nested = stack, nested
            return uow

    def run(self, work, *, opened: "UnitOfWork | None" = None, hold=None, **context):
        """Run ``work(uow)`` in a unit of work and return its result: in ``opened`` (from
        ``begin``) when given, else in a new one.

        Serialization failures and deadlocks re-run the whole call in a new unit, a bounded
        number of times with jitter; driver errors leave as domain errors (errors.translate).

        With ``hold``, a unit whose work succeeded is not committed but handed to ``hold(uow)``,
        open, for more to be written in its transaction (a request's Idempotency-Key and its
        answer, clarity.api.idempotency); the holder ends it with ``uow.commit()`` or ``uow.end()``.
        """
        for attempt in range(1, MAX_ATTEMPTS + 1):
            nested = opened is not None and opened.nested
            try:
                uow, opened = opened or self.begin(**context), None
                nested = uow.nested
                with uow.ending:
                    result = work(uow)
                    if hold is not None:
                        hold(uow)
                        uow.ending = uow.ending.pop_all()  # leaves this block with nothing to end
                    return result
            except RETRYABLE as exc:
                if nested or attempt == MAX_ATTEMPTS:
                    raise errors.translate(exc) from exc
                log.info("retrying after %s (attempt %d)", type(exc).__name__, attempt)
                time.sleep(random.uniform(0, 0.02 * 2 ** attempt))
            except psycopg.Error as exc:
                translated = errors.translate(exc)
                if translated is None:
                    raise
                raise translated from exc


class UnitOfWork:
    """One connection, one transaction, the actor's context and a buffer of audit events.

    On a clean exit the buffered audit events are written in one INSERT, the transaction
    commits and after-commit hooks run. On an exception the transaction rolls back; when the
    exception is a domain error (a denial, a bad request, or a conflict the database found)
    the buffered audit events are still written, in a transaction of their own, with the error's outcome: a denied access leaves
    a trace even though nothing else of the request does.
    """

    # A request's Idempotency-Key holding this unit (clarity.api.idempotency.Claim), if it sent one.
    claim = None

    def __init__(self, conn, queries, keyring, *, replica: Replica | None = None, actor=None, request_id=None,
                 client_addr=None):
        self.conn = conn
        self.queries = queries
        self.keyring = keyring
        self.replica = replica
        self._replica_held = contextlib.ExitStack()  # the replica connection of ``reads``, if any
        self.actor = actor
        self.request_id = request_id
        self.client_addr = client_addr
        self.events: list[audit.AuditEvent] = []
        self._after_commit = []
        self.ending: contextlib.ExitStack | None = None  # set by Database.begin
        self.nested = False

    def __enter__(self):
        self._outer = _OPEN_UNITS.get(self.conn)
        if self._outer is None:
            _OPEN_UNITS[self.conn] = self
        self._transaction = self.conn.transaction()
        try:
            self._transaction.__enter__()
        except BaseException:
            if self._outer is None:
                _OPEN_UNITS.pop(self.conn, None)
            raise
        if self.actor is not None:
            self.set_actor(self.actor)
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            return self._exit(exc_type, exc, tb)
        finally:
            self._replica_held.close()

    def _exit(self, exc_type, exc, tb):
        if self._outer is None:
            _OPEN_UNITS.pop(self.conn, None)
        if exc is None:
            try:
                self._flush_events(self.events)
            except BaseException as flush_exc:
                self._transaction.__exit__(type(flush_exc), flush_exc, flush_exc.__traceback__)
                raise
            self._transaction.__exit__(None, None, None)
            if self._outer is not None:  # a savepoint: the hooks wait for the real commit
                self._outer._after_commit.extend(self._after_commit)
            else:
                for hook in self._after_commit:
                    hook()
            return False
        self._transaction.__exit__(exc_type, exc, tb)
        failure = _domain_error(exc)
        if failure is not None and self.events:
            for event in self.events:
                event.outcome = failure.outcome
            with self.conn.transaction():
                self._flush_events(self.events)
        return False

    def end(self, exc: BaseException) -> None:
        """End a unit opened by ``Database.begin`` without running work in it: roll back,
        keep the audit events of a domain error (a denial), return the connection."""
        self.ending.__exit__(type(exc), exc, exc.__traceback__)

    def commit(self) -> None:
        """Commit a unit opened by ``Database.begin`` (or held open by ``Database.run``): write
        its audit events, commit, return the connection. Raises what committing raises (the
        unit is ended then too)."""
        self.ending.__exit__(None, None, None)

    def set_actor(self, actor) -> None:
        """Record the actor for this transaction, in PostgreSQL too (SET LOCAL semantics): the
        row-level security policies read it. (Bearer-token checks set it in their own query.)"""
        self.actor = actor
        self.queries.context.set_actor_context.value(self.conn, self._actor_context())

    def _actor_context(self) -> dict:
        actor = self.actor
        return {"actor_id": str(actor.id) if actor else "", "actor_role": actor.role if actor else "",
                "request_id": self.request_id or ""}

    @cached_property
    def reads(self) -> "UnitOfWork | Reads":
        """The repositories of the heavy reads (``patients``, ``biometrics``, ``audit_events``):
        on the read replica when one is configured and usable now (Replica), in a READ ONLY
        transaction of its own with this unit's actor context, so row-level security applies
        there too, ended with this unit; else this unit itself, on the primary.

        What they read may lag the primary by up to the replica's lag limit: use them for
        lists, searches and summaries only, never to read back a write, for a scope check or
        for what a write depends on (ETags, versions). Audit events are still buffered here."""
        if self.replica is None:
            return self
        conn = self.replica.begin(self._replica_held, self._actor_context())
        return self if conn is None else Reads(conn, self)

    def audit(self, event: audit.AuditEvent) -> None:
        """Buffer an audit event; it is written in this transaction, just before commit."""
        self.events.append(event)

    def after_commit(self, hook) -> None:
        self._after_commit.append(hook)

    def _flush_events(self, events) -> None:
        """Write the buffered events. Fails closed: if the audit trail cannot be written the
        whole unit fails with Unavailable (503), so no PHI leaves and nothing changes."""
        if events:
            try:
                self.audit_events.add_all(events, actor=self.actor, client_addr=self.client_addr,
                                          request_id=self.request_id)
            except psycopg.Error as exc:
                log.error("audit insert failed (%s, SQLSTATE %s)", type(exc).__name__, exc.sqlstate)
                raise errors.Unavailable("The audit trail is unavailable; nothing was done.") from exc
            metrics.count_audit_events(len(events))
            events.clear()

    @cached_property
    def audit_events(self) -> AuditRepository:
        return AuditRepository(self.conn, self.queries.audit)

    @cached_property
    def users(self) -> UserRepository:
        return UserRepository(self.conn, self.queries.users)

    @cached_property
    def tokens(self) -> TokenRepository:
        return TokenRepository(self.conn, self.queries.tokens)

    @cached_property
    def patients(self) -> PatientRepository:
        return PatientRepository(self.conn, self.queries.patients, self._keyring())

    @cached_property
    def emergency_access(self) -> EmergencyAccessRepository:
        return EmergencyAccessRepository(self.conn, self.queries.emergency_access, self._keyring())

    @cached_property
    def biometrics(self) -> BiometricRepository:
        return BiometricRepository(self.conn, self.queries.biometrics)

    @cached_property
    def alerts(self) -> AlertRepository:
        return AlertRepository(self.conn, self.queries.alerts)

    @cached_property
    def appointments(self) -> AppointmentRepository:
        return AppointmentRepository(self.conn, self.queries.appointments)

    @cached_property
    def records(self) -> RecordRepository:
        return RecordRepository(self.conn, self.queries.records, self._keyring())

    @cached_property
    def digital_twins(self) -> DigitalTwinRepository:
        return DigitalTwinRepository(self.conn, self.queries.digital_twins)

    @cached_property
    def documents(self) -> DocumentRepository:
        return DocumentRepository(self.conn, self.queries.documents, self._keyring())

    @cached_property
    def idempotency(self) -> IdempotencyRepository:
        # The keyring only when an answer is stored or read: the purge needs none.
        return IdempotencyRepository(self.conn, self.queries.idempotency, self.keyring)

    def _keyring(self):
        if self.keyring is None:
            raise errors.Unavailable("Encryption keys are not configured.", retry_after=60)
        return self.keyring


def _domain_error(exc) -> errors.ClarityError | None:
    """What a failed unit of work's audit events record: the domain error, or the one a driver
    error translates to; None for retried contention and for errors that are not ours."""
    if isinstance(exc, errors.ClarityError):
        return exc
    if isinstance(exc, psycopg.Error) and not isinstance(exc, RETRYABLE):
        return errors.translate(exc)
    return None


def migration_ids(directory: Path = MIGRATIONS_DIR) -> set[str]:
    """The ids yoyo gives the migration files (file names without .sql)."""
    return {p.name[:-4] for p in directory.glob("*.sql") if not p.name.endswith(".rollback.sql")}
