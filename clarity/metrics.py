"""Prometheus metrics: what the app counts, the pool sampler, and the scrape endpoint.

Under gunicorn each worker writes its metrics to files (prometheus_client's multiprocess mode,
in ``PROMETHEUS_MULTIPROC_DIR``) and the master serves their sum on an address of its own,
``CLARITY_METRICS_BIND`` (default 127.0.0.1:9464), never on the API's; gunicorn.conf.py's
hooks call ``prepare_directory``, ``serve`` and ``worker_exited``. Elsewhere (tests, ``flask
run``) ``render`` writes the process's own metrics.

Labels hold fixed vocabularies only: route templates (``url_rule.rule``, never a path),
methods, statuses, SQLSTATE classes and outcomes; never an id, an email, a token or PHI.

prometheus_client picks its storage (memory, or files) when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``: so this module imports it on first use only, and gunicorn's master
sets the variable before anything imports it (``prepare_directory`` checks).
"""
from __future__ import annotations

import datetime as dt
import functools
import glob
import logging
import os
import sys
import tempfile
import threading
import time

from clarity.periodic import Periodic

log = logging.getLogger(__name__)

DEFAULT_BIND = "127.0.0.1:9464"
UNMATCHED = "<unmatched>"  # the route of a request no URL rule matched (404, 405)
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))  # others: "other"
SIGN_IN_OUTCOMES = ("success", "failure", "throttled")
RATE_LIMIT_SCOPES = ("principal", "address")
LATENCY_BUCKETS = (.0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0)
POOL_SAMPLE_SECONDS = 1.0
# A scrape reads the audit trail at most once a second (more frequent scrapes get that
# answer), on a connection of its own with a short connect and statement timeout.
AUDIT_MIN_INTERVAL_SECONDS = 1.0
AUDIT_CONNECT_TIMEOUT_SECONDS = 2
AUDIT_STATEMENT_TIMEOUT_MS = 1000


class _Metrics:
    """Every metric this process counts; made on first use (see the module's docstring)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter("clarity_http_requests", "Requests answered, by route template, method and status.",
                                ("route", "method", "status"), registry=r)
        self.latency = Histogram("clarity_http_request_duration_seconds",
                                 "Time from the first to the last request hook, by route template and method.",
                                 ("route", "method"), buckets=LATENCY_BUCKETS, registry=r)
        # livesum: the sum over the workers alive now (a dead worker's files are removed).
        gauge = functools.partial(Gauge, multiprocess_mode="livesum", registry=r)
        self.pool_size = gauge("clarity_db_pool_connections", "Connections open in the workers' pools.")
        self.pool_idle = gauge("clarity_db_pool_idle_connections", "Open connections free for a request.")
        self.pool_waiting = gauge("clarity_db_pool_waiting_requests", "Requests waiting for a connection.")
        self.pool_max = gauge("clarity_db_pool_max_connections", "The most connections the pools may open.")
        self.pool_timeouts = Counter("clarity_db_pool_timeouts", "Requests that found no free connection in time (503).",
                                     registry=r)
        self.db_errors = Counter("clarity_db_errors", "Database errors, by SQLSTATE class ('none': no SQLSTATE, "
                                 "e.g. a lost connection).", ("sqlstate_class",), registry=r)
        self.audit_written = Counter("clarity_audit_events_written", "Audit events inserted.", registry=r)
        self.sign_ins = Counter("clarity_sign_ins", "Sign-in attempts, by outcome (success, failure, throttled).",
                                ("outcome",), registry=r)
        self.rate_limited = Counter("clarity_rate_limited", "Requests refused by the rate limit (429), by what "
                                    "was limited: a signed-in principal or a client address.", ("scope",), registry=r)
        # Known label values start at 0, so a first failure shows as an increase.
        for outcome in SIGN_IN_OUTCOMES:
            self.sign_ins.labels(outcome)
        for scope in RATE_LIMIT_SCOPES:
            self.rate_limited.labels(scope)
        self.request_children = {}  # (route, method, status) -> (counter, histogram): skips labels()
        self.replica_lag = None  # made on the first measurement: only a worker with a replica exports it


_metrics: _Metrics | None = None
_made = threading.Lock()


def _get() -> _Metrics:
    global _metrics
    if _metrics is None:
        with _made:
            if _metrics is None:
                _metrics = _Metrics()
    return _metrics


_failed = False


def _never_fails(count):
    """Counting never fails its caller (a request, a unit of work that wrote its audit events):
    an error (the metrics directory full or deleted) is logged once per process and skipped."""
    @functools.wraps(count)
    def guarded(*args):
        global _failed
        try:
            count(*args)
        except Exception as exc:
            if not _failed:
                _failed = True
                log.error("metrics cannot be counted (%s); they may be incomplete", type(exc).__name__)
    return guarded


@_never_fails
def observe_request(route: str, method: str, status: int, seconds: float | None) -> None:
    """Count an answered request; ``route`` is its URL rule or UNMATCHED, never its path."""
    m = _get()
    if method not in METHODS:
        method = "other"
    children = m.request_children.get((route, method, status))
    if children is None:
        children = m.request_children[route, method, status] = (
            m.requests.labels(route, method, str(status)), m.latency.labels(route, method))
    children[0].inc()
    if seconds is not None:
        children[1].observe(seconds)


@_never_fails
def count_database_error(exc) -> None:
    """Count a driver error by its SQLSTATE class, once however often it is translated."""
    if getattr(exc, "_clarity_counted", False):
        return
    exc._clarity_counted = True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    _get().db_errors.labels(sqlstate[:2] if sqlstate[:2].isalnum() else "none").inc()


@_never_fails
def count_audit_events(count: int) -> None:
    _get().audit_written.inc(count)


@_never_fails
def count_sign_in(outcome: str) -> None:
    """``outcome``: one of SIGN_IN_OUTCOMES."""
    _get().sign_ins.labels(outcome).inc()


@_never_fails
def count_rate_limited(scope: str) -> None:
    """``scope``: one of RATE_LIMIT_SCOPES."""
    _get().rate_limited.labels(scope).inc()


@_never_fails
def observe_replica_lag(seconds: float | None) -> None:
    """Set the read replica's lag as last measured (clarity.replica.Replica); None, when it could
    not be reached or its lag is unknown, shows as +Inf, over any alert threshold."""
    m = _get()
    if m.replica_lag is None:
        from prometheus_client import Gauge

        with _made:
            if m.replica_lag is None:
                # livemax: the worst worker's view, among the workers alive now.
                m.replica_lag = Gauge("clarity_db_replica_lag_seconds", "The read replica's replay lag as "
                                      "last measured (+Inf: unreachable or unknown).", multiprocess_mode="livemax",
                                      registry=m.registry)
    m.replica_lag.set(float("inf") if seconds is None else seconds)


@_never_fails
def sample_pool(db) -> None:
    """Copy the pool's statistics (clarity.db.Database.pool_stats) into the pool gauges."""
    stats = db.pool_stats()
    if not stats:
        return
    m = _get()
    m.pool_size.set(stats.get("pool_size", 0))
    m.pool_idle.set(stats.get("pool_available", 0))
    m.pool_waiting.set(stats.get("requests_waiting", 0))
    m.pool_max.set(stats.get("pool_max", 0))
    if stats.get("requests_timeouts"):
        m.pool_timeouts.inc(stats["requests_timeouts"])


class PoolSampler(Periodic):
    """A daemon thread sampling a worker's pool every ``interval_seconds``.

    A sampler rather than a hook after each request: a sync worker has returned its
    connection by then, so every sample would show the pool idle; a thread samples while
    requests hold connections, costs requests nothing, and keeps an idle worker's gauges true.
    """

    name = "clarity-pool-sampler"

    def __init__(self, db, interval_seconds: float = POOL_SAMPLE_SECONDS):
        super().__init__(interval_seconds)
        self.db = db

    def tick(self) -> None:
        sample_pool(self.db)  # never raises: the thread lives on, the next tick retries


def audit_backlog(repo) -> tuple[int | None, float | None]:
    """(events waiting to be sealed, seconds since the last seal) from ``repo`` (an
    AuditRepository); the age is None before the first seal, the count None when the last
    seal's event is gone (a broken chain: ``audit verify`` says where)."""
    head = repo.last_seal()
    if head is None:
        return repo.count_unsealed((0, 0)), None
    age = (dt.datetime.now(dt.timezone.utc) - head.sealed_at).total_seconds()
    if head.event_xid is None:
        return None, age
    return repo.count_unsealed((head.event_xid, head.event_id)), age


class AuditCollector:
    """The audit trail's backlog, read from the database at scrape time (at most once per
    ``min_interval`` seconds) on a connection from ``connect()`` (a context manager)."""

    def __init__(self, connect, audit_queries, min_interval: float = AUDIT_MIN_INTERVAL_SECONDS):
        self._connect, self._queries, self._min_interval = connect, audit_queries, min_interval
        self._lock = threading.Lock()
        self._read_at, self._last = float("-inf"), (0, None, None)

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        up, unsealed, age = self._read()
        yield GaugeMetricFamily("clarity_audit_metrics_up", "1 when this scrape read the audit trail's backlog.",
                                value=up)
        if unsealed is not None:
            yield GaugeMetricFamily("clarity_audit_unsealed_events", "Committed audit events not sealed yet.",
                                    value=unsealed)
        if age is not None:
            yield GaugeMetricFamily("clarity_audit_last_seal_age_seconds", "Seconds since the last seal was "
                                    "written (it grows while nothing waits to be sealed).", value=age)

    def _read(self) -> tuple[int, int | None, float | None]:
        from clarity.repositories.audit import AuditRepository

        with self._lock:
            if time.monotonic() - self._read_at >= self._min_interval:
                try:
                    with self._connect() as conn:
                        self._last = (1, *audit_backlog(AuditRepository(conn, self._queries)))
                except Exception as exc:  # a scrape never fails for it: clarity_audit_metrics_up says 0
                    log.warning("metrics: the audit backlog could not be read (%s)", type(exc).__name__)
                    self._last = (0, None, None)
                self._read_at = time.monotonic()
            return self._last


def render(db=None) -> bytes:
    """This process's metrics in Prometheus's text format (tests, ``flask run``: under gunicorn
    the master serves every worker's). With ``db`` (a clarity.db.Database) the pool is
    sampled and the audit backlog read through it first."""
    from prometheus_client import generate_latest

    m = _get()
    if db is None:
        return generate_latest(m.registry)
    sample_pool(db)
    return generate_latest(m.registry) + generate_latest(AuditCollector(db.connection, db.queries.audit, 0))


def parse_bind(text: str | None) -> tuple[str, int] | None:
    """``CLARITY_METRICS_BIND`` as (host, port): ``host:port`` or ``[ipv6]:port``; DEFAULT_BIND
    when empty; None for ``off``. Raises ValueError on anything else."""
    text = (text or DEFAULT_BIND).strip()
    if text == "off":
        return None
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"CLARITY_METRICS_BIND must look like 127.0.0.1:9464 (or off), not {text!r}")
    return host, int(port)


def prepare_directory(environ=os.environ) -> tuple[str, bool]:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory private to this server (in
    gunicorn's master, before any worker starts); return it and whether it was made here.

    The operator's directory is created if missing and emptied of the metric files a previous
    run left; without one, a new ``tempfile.mkdtemp`` (mode 700, outside the checkout, so it
    works whatever user runs the server and however private its home is), for the caller to
    remove at exit. Raises RuntimeError when prometheus_client was imported already with its
    storage in memory: each worker would count alone and nothing would export it.
    """
    values = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set")
    path = environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        environ["PROMETHEUS_MULTIPROC_DIR"] = path = tempfile.mkdtemp(prefix="clarity-metrics-")
        return path, True
    os.makedirs(path, mode=0o700, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.remove(stale)
    return path, False


def serve(address: tuple[str, int], settings):
    """Serve every worker's metrics, and the audit backlog, over HTTP on ``address`` from a
    daemon thread (gunicorn's master); return the server. Raises OSError when the address is
    taken. The backlog is read on a connection opened per read (the master keeps none open
    across the forks of its workers)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    from clarity import queries

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(AuditCollector(functools.partial(_scrape_connection, settings), queries.load().audit))
    server, _thread = start_http_server(address[1], addr=address[0], registry=registry)
    return server


def _scrape_connection(settings):
    import psycopg

    return psycopg.connect(settings.conninfo, autocommit=True, application_name="clarity-metrics",
                           connect_timeout=AUDIT_CONNECT_TIMEOUT_SECONDS,
                           **settings.session_options(AUDIT_STATEMENT_TIMEOUT_MS))


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its pool is gone); its counters keep counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
