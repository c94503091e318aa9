"""Clarity through PgBouncer in transaction mode (issue 10).

Debian's PgBouncer 1.18 does not carry protocol-level prepared statements in transaction mode,
and refuses startup options; ``CLARITY_DB_TRANSACTION_POOLING=1`` turns psycopg's automatic
prepares off and leaves the options out (the role carries statement_timeout). A cluster of the
module's own (SCRAM for every login) sits behind a PgBouncer with 2 server connections, fewer
than the app's clients; the app logs in to PgBouncer with SCRAM and PgBouncer to PostgreSQL with
the role's SCRAM secret, as the README's runbook says. Nothing secret outlives the module.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import itertools
import random
import secrets
import threading
import time
import uuid

import psycopg
import pytest
import requests
from psycopg import errors as pg

from clarity import audit_chain, localpg, localpgbouncer, queries
from clarity.audit import AuditEvent
from clarity.repositories.audit import AuditRepository
from clarity.security.access import Actor
from clarity.security.passwords import Passwords
from tests.conftest import APP_ROLE, make_settings, patient_body
from tests.e2e.conftest import E2E_PASSWORD

pytestmark = pytest.mark.slow

DATABASE = "clarity"
SERVER_CONNECTIONS = 2  # PgBouncer's pool: fewer than the app's client connections
WORKERS = 3  # gunicorn workers, each with a pool of at least 2 connections
THREADS, ITERATIONS = 8, 50  # the hammer: 400 requests
RECENT = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).replace(microsecond=0)


@dataclasses.dataclass
class Provider:
    id: uuid.UUID
    email: str


@dataclasses.dataclass
class Stack:
    cluster: localpg.Cluster
    bouncer: localpgbouncer.Bouncer
    app_password: str
    providers: tuple[Provider, Provider]

    def url(self, database=DATABASE, user="postgres") -> str:
        """Straight to PostgreSQL (as conftest.Server.url, for make_settings)."""
        return self.cluster.url(user, self.app_password if user == APP_ROLE else None, database)

    @property
    def pooled_url(self) -> str:
        """The app role through PgBouncer."""
        return self.bouncer.url(APP_ROLE, self.app_password, DATABASE)

    def owner(self):
        return psycopg.connect(self.url(), autocommit=True)

    def app_backends(self) -> list[int]:
        """The pids of the app role's server connections, as PostgreSQL sees them."""
        with self.owner() as conn:
            return [row[0] for row in conn.execute("SELECT pid FROM pg_stat_activity WHERE usename = %s",
                                                   (APP_ROLE,))]

    def clients(self) -> int:
        return sum(1 for c in self.bouncer.show("CLIENTS") if (c["user"], c["database"]) == (APP_ROLE, DATABASE))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    cluster = localpg.Cluster(tmp_path_factory.mktemp("pgbouncer-checkout") / ".var" / "pg")
    try:
        cluster.start()
        app_password = secrets.token_urlsafe(24)
        localpg.provision(cluster, DATABASE, app_password)
        with psycopg.connect(cluster.url(database=DATABASE), autocommit=True) as owner:
            # The runbook's replacement for the startup option PgBouncer refuses.
            owner.execute(f"ALTER ROLE {APP_ROLE} SET statement_timeout = '5s'")
            secret = localpgbouncer.scram_secret(owner, APP_ROLE)
            providers = tuple(add_provider(owner) for _ in range(2))
        with localpgbouncer.running(cluster.port, {APP_ROLE: secret}, pool_size=SERVER_CONNECTIONS) as bouncer:
            yield Stack(cluster, bouncer, app_password, providers)
    finally:
        localpg.clean(cluster.base.parent)


def add_provider(owner) -> Provider:
    email = f"provider-{uuid.uuid4().hex[:8]}@clarity.test"
    password_hash = Passwords(time_cost=1, memory_kib=1024).hash(E2E_PASSWORD)
    user_id = owner.execute("INSERT INTO users (email, display_name, role, password_hash) "
                            "VALUES (%s, 'PgBouncer provider', 'provider', %s) RETURNING id",
                            (email, password_hash)).fetchone()[0]
    return Provider(user_id, email)


@pytest.fixture
def pooled_app(stack, make_app):
    """An app whose pool of 4 connections goes through PgBouncer, with the setting on."""
    app = make_app(make_settings(stack, DATABASE, database_url=stack.pooled_url, db_transaction_pooling=True,
                                 pool_min_size=4, pool_max_size=4))
    app.extensions["clarity"].db.open(wait=True)
    return app


def test_without_the_setting_prepares_collide_and_startup_options_are_refused(stack):
    """The control: what CLARITY_DB_TRANSACTION_POOLING=1 avoids."""
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        psycopg.connect(stack.pooled_url, options="-c statement_timeout=5000", connect_timeout=5)
    with psycopg.connect(stack.pooled_url, autocommit=True) as first, \
            psycopg.connect(stack.pooled_url, autocommit=True) as second:
        with pytest.raises((pg.DuplicatePreparedStatement, pg.InvalidSqlStatementName)):
            for _ in range(8):  # psycopg prepares the 6th run as _pg3_0, on each client connection
                for conn in (first, second):
                    conn.execute("SELECT count(*) FROM patients WHERE id = %s", (uuid.uuid4(),))


def test_no_query_asks_psycopg_to_prepare_it():
    """prepare_threshold=None overrides prepare=None; nothing may say prepare=True."""
    assert {query.prepare for query in queries.all_queries(queries.load())} <= {None, False}


def test_two_providers_hammering_through_gunicorn_never_see_each_others_patients(stack, start_gunicorn):
    served = start_gunicorn(DATABASE_URL=stack.pooled_url, CLARITY_DB_TRANSACTION_POOLING="1",
                            WEB_CONCURRENCY=str(WORKERS), CLARITY_DB_POOL_MIN="2", CLARITY_DB_POOL_MAX="4",
                            CLARITY_AUDIT_SEAL_INTERVAL_SECONDS="0.1", CLARITY_RATE_LIMIT_ENABLED="0")
    api = next(served) + "/api/v1"
    try:
        sessions = [ProviderSession.sign_in(api, provider) for provider in stack.providers]
        for mine, theirs in (sessions, sessions[::-1]):
            mine.other = theirs
        pools = PoolSampler(stack.bouncer)
        with pools, concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            tallies = [f.result(timeout=60) for f in [pool.submit(hammer, sessions, seed) for seed in range(THREADS)]]
        clients, backends = stack.clients(), stack.app_backends()
        audit_problem = verify_audit_trail(stack)
    finally:
        served.close()

    total = sum(tallies, Tally())
    print(f"\n{total.requests} requests ({total.by_provider}) over {clients} client connections to PgBouncer "
          f"and {len(backends)} server connections; most clients waiting at once: {pools.most_waiting}, "
          f"server connections busy at once: {pools.most_active}; {total.readings} readings stored")
    assert total.leaks == [], "a provider saw another provider's data"
    assert total.requests == THREADS * ITERATIONS and min(total.by_provider.values()) > 100
    assert clients >= WORKERS * 2 > SERVER_CONNECTIONS >= len(backends) > 0
    assert stored_readings(stack, sessions) == {p: n for s in sessions for p, n in s.stored.items()}
    assert audit_problem is None


@dataclasses.dataclass
class ProviderSession:
    name: str
    api: str
    headers: dict
    patients: dict  # id -> MRN
    stored: dict  # patient id -> readings the API said it stored
    other: "ProviderSession | None" = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @classmethod
    def sign_in(cls, api: str, provider: Provider) -> "ProviderSession":
        login = requests.post(f"{api}/auth/tokens", json={"email": provider.email, "password": E2E_PASSWORD},
                              timeout=10)
        assert login.status_code == 201, login.text
        session = cls(provider.email, api, {"Authorization": f"Bearer {login.json()['token']}"}, {}, {})
        for _ in range(3):
            body = patient_body()
            created = requests.post(f"{api}/patients", json=body, headers=session.headers, timeout=10)
            assert created.status_code == 201, created.text
            session.patients[created.json()["id"]] = body["mrn"]
            session.stored[created.json()["id"]] = 0
        return session

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.api}{path}", headers=self.headers, timeout=10)

    def post(self, path: str, body) -> requests.Response:
        return requests.post(f"{self.api}{path}", json=body, headers=self.headers, timeout=10)


@dataclasses.dataclass
class Tally:
    requests: int = 0
    by_provider: dict = dataclasses.field(default_factory=dict)
    readings: int = 0
    leaks: list = dataclasses.field(default_factory=list)

    def __add__(self, other: "Tally") -> "Tally":
        by_provider = {k: self.by_provider.get(k, 0) + other.by_provider.get(k, 0)
                       for k in {*self.by_provider, *other.by_provider}}
        return Tally(self.requests + other.requests, by_provider, self.readings + other.readings,
                     self.leaks + other.leaks)


_instants = itertools.count()


def readings_for(patient_id: str, count: int) -> list[dict]:
    """Readings at distinct instants from a device named for the patient, so a reading stored
    under another patient shows."""
    return [{"kind": "heart_rate", "value": 70, "unit": "bpm", "source_device": f"dev-{patient_id[:8]}",
             "recorded_at": (RECENT - dt.timedelta(seconds=next(_instants))).isoformat()} for _ in range(count)]


def hammer(sessions: list[ProviderSession], seed: int) -> Tally:
    """ITERATIONS requests by either provider, each checked: own data answers, others' is 404."""
    rng, tally = random.Random(seed), Tally()
    for _ in range(ITERATIONS):
        me = rng.choice(sessions)
        mine, theirs = rng.choice(list(me.patients)), rng.choice(list(me.other.patients))
        action = rng.choice(["read", "read_other", "list", "ingest", "ingest_other", "readings"])
        response, leak = _act(me, action, mine, theirs, rng)
        if action == "ingest" and response.status_code == 201:
            with me.lock:
                me.stored[mine] += response.json()["stored"]
            tally.readings += response.json()["stored"]
        if leak:
            tally.leaks.append((action, response.status_code, response.text[:200]))
        tally.requests += 1
        tally.by_provider[me.name] = tally.by_provider.get(me.name, 0) + 1
    return tally


def _act(me: ProviderSession, action: str, mine: str, theirs: str, rng) -> tuple[requests.Response, bool]:
    """Do one request; return it and whether its answer is wrong for the caller."""
    if action == "read":
        response = me.get(f"/patients/{mine}")
        return response, response.status_code != 200 or response.json()["mrn"] != me.patients[mine]
    if action == "read_other":
        response = me.get(f"/patients/{theirs}")
        return response, response.status_code != 404
    if action == "list":
        response = me.get("/patients")
        return response, response.status_code != 200 or {p["id"] for p in response.json()} != set(me.patients)
    if action == "ingest":
        response = me.post(f"/patients/{mine}/biometrics", readings_for(mine, rng.randint(1, 20)))
        return response, response.status_code != 201
    if action == "ingest_other":
        response = me.post(f"/patients/{theirs}/biometrics", readings_for(theirs, 3))
        return response, response.status_code != 404
    response = me.get(f"/patients/{mine}/biometrics?limit=200")
    devices = {r["source_device"] for r in response.json()} if response.status_code == 200 else None
    return response, devices is None or not devices <= {f"dev-{mine[:8]}"}


class PoolSampler:
    """Samples PgBouncer's pool of the app role while the block runs: the most clients waiting
    for a server connection and the most server connections busy at once."""

    def __init__(self, bouncer):
        self.bouncer, self.most_waiting, self.most_active = bouncer, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self):
        while not self._stop.wait(0.02):
            for row in self.bouncer.show("POOLS"):
                if (row["user"], row["database"]) == (APP_ROLE, DATABASE):
                    self.most_waiting = max(self.most_waiting, row["cl_waiting"])
                    self.most_active = max(self.most_active, row["sv_active"])


def stored_readings(stack, sessions) -> dict:
    ids = [uuid.UUID(p) for s in sessions for p in s.patients]
    with stack.owner() as conn:
        counted = dict(conn.execute("SELECT patient_id::text, count(*) FROM biometric_readings "
                                    "WHERE patient_id = ANY(%s) GROUP BY patient_id", (ids,)).fetchall())
    return {str(p): counted.get(str(p), 0) for p in ids}


def verify_audit_trail(stack, timeout: float = 10):
    """The first problem ``audit verify`` finds (None: every event sealed, the chain intact),
    once the background sealers, which sealed through PgBouncer, have caught up."""
    with stack.owner() as conn:
        deadline = time.monotonic() + timeout
        while conn.execute("SELECT count(*) FROM audit_events e WHERE NOT EXISTS "
                           "(SELECT 1 FROM audit_seals s WHERE s.event_id = e.id)").fetchone()[0]:
            assert time.monotonic() < deadline, "the background sealers did not seal every event"
            time.sleep(0.1)
        conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
        with conn.transaction():
            return audit_chain.verify(AuditRepository(conn, queries.load().audit), max_unsealed_seconds=0).problem


def test_actor_context_stays_in_its_transaction_on_server_connections_both_providers_share(stack, pooled_app):
    db = pooled_app.extensions["clarity"].db
    client = pooled_app.test_client()
    actors = [Actor(p.id, "provider") for p in stack.providers]
    for provider in stack.providers:
        create_patients(client, provider, 2)
    with stack.owner() as conn:  # with those the other tests created
        own = {a.id: [row[0] for row in conn.execute("SELECT id FROM patients WHERE provider_id = %s", (a.id,))]
               for a in actors}
    served_by = {}  # backend pid -> providers whose transactions it ran
    leaks, lock = [], threading.Lock()

    def transaction(actor, other):
        def work(uow):
            pid, = uow.conn.execute("SELECT pg_backend_pid()").fetchone()
            seen = {p.id for p in uow.patients.list(actor)}
            mine = [uow.patients.get(p, actor) for p in own[actor.id]]
            theirs = [uow.patients.get(p, actor) for p in own[other.id]]
            return pid, seen, mine, theirs

        pid, seen, mine, theirs = db.run(work, actor=actor)
        leftover = db.run(lambda uow: uow.conn.execute(
            "SELECT current_setting('clarity.actor_id', true)").fetchone()[0])
        with lock:
            served_by.setdefault(pid, set()).add(actor.id)
            if seen != set(own[actor.id]) or None in mine or any(theirs) or leftover:
                leaks.append((actor.id, seen, theirs, leftover))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(transaction, *pair(actors, i)) for i in range(160)]:
            f.result(timeout=30)

    with db.connection() as conn:
        assert conn.prepare_threshold is None
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "5s"
    print(f"\n160 units of work by 2 providers over {stack.clients()} client connections ran on "
          f"{len(served_by)} server connection(s): {sorted(len(v) for v in served_by.values())} provider(s) each")
    assert leaks == []
    assert len(served_by) <= SERVER_CONNECTIONS < stack.clients()
    assert any(len(providers) == 2 for providers in served_by.values()), "no server connection was shared"


def pair(actors, i):
    """Alternately the first and the second actor, with the other."""
    return (actors[i % 2], actors[1 - i % 2])


def create_patients(client, provider: Provider, count: int) -> list[uuid.UUID]:
    login = client.post("/api/v1/auth/tokens", json={"email": provider.email, "password": E2E_PASSWORD})
    assert login.status_code == 201, login.get_json()
    headers = {"Authorization": f"Bearer {login.get_json()['token']}"}
    ids = []
    for _ in range(count):
        created = client.post("/api/v1/patients", json=patient_body(), headers=headers)
        assert created.status_code == 201, created.get_json()
        ids.append(uuid.UUID(created.get_json()["id"]))
    return ids


def commit_events(db, count: int) -> None:
    def work(uow):
        for _ in range(count):
            uow.audit(AuditEvent("R", "patient.read", "patient", uuid.uuid4()))

    db.run(work)


def seal_once(db):
    return db.run(lambda uow: audit_chain.seal(uow.audit_events, batch_size=7, max_batches=3))


def test_a_sealer_holding_the_lock_through_pgbouncer_excludes_a_sealer_on_the_other_server_connection(
        stack, pooled_app):
    db = pooled_app.extensions["clarity"].db
    commit_events(db, 2)
    with psycopg.connect(stack.pooled_url, autocommit=True, prepare_threshold=None) as sealer_conn:
        with sealer_conn.transaction():
            assert audit_chain.seal(AuditRepository(sealer_conn, db.queries.audit)) is not None
            holder, = sealer_conn.execute("SELECT pg_backend_pid()").fetchone()
            other, second = db.run(lambda uow: (uow.conn.execute("SELECT pg_backend_pid()").fetchone()[0],
                                                audit_chain.seal(uow.audit_events)))
            assert other != holder and second is None
    assert seal_once(db) is not None  # the lock went with the transaction


def test_concurrent_sealers_through_pgbouncer_seal_every_event_exactly_once(stack, pooled_app):
    db = pooled_app.extensions["clarity"].db
    stop, runs = threading.Event(), []

    def sealer():
        while not stop.is_set():
            runs.append(seal_once(db))

    def writer():
        for _ in range(25):
            commit_events(db, 3)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        sealers = [pool.submit(sealer) for _ in range(4)]
        for f in [pool.submit(writer) for _ in range(4)]:
            f.result(timeout=30)
        stop.set()
        for f in sealers:
            f.result(timeout=10)
    while seal_once(db):
        pass

    with stack.owner() as conn:
        events = conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
        seals = [row[0] for row in conn.execute("SELECT event_id FROM audit_seals ORDER BY seq")]
    print(f"\n{len(runs)} sealer runs through PgBouncer: {runs.count(None)} found the lock taken, "
          f"{sum(1 for r in runs if r)} sealed; {events} events, {len(seals)} seals")
    assert None in runs and any(runs), "the sealers never contended"
    assert len(seals) == len(set(seals)) == events
    assert verify_audit_trail(stack) is None
