"""Failover to a streaming standby without restarting gunicorn (issue 10).

A primary and a synchronous standby (tests/e2e/standby.py); gunicorn serves a DATABASE_URL
naming both hosts with ``target_session_attrs=read-write``. Under steady load (patient creates,
biometric batch ingests, reads) the primary is stopped with ``pg_ctl stop -m immediate`` and,
OUTAGE_SECONDS later, the standby is promoted. While there is no primary every request answers
503 with Retry-After within the pool timeout; within RECOVERY_SECONDS of the promotion every
request answers 2xx again, from the same gunicorn. Every write answered 2xx is on the promoted
server, and its audit chain verifies.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import secrets
import subprocess
import threading
import time
import uuid

import psycopg
import pytest
import requests

from clarity import localpg
from clarity.config import Settings
from clarity.security.passwords import Passwords
from tests.conftest import APP_ROLE, patient_body
from tests.e2e.conftest import BIN, E2E_PASSWORD, ROOT
from tests.e2e.standby import replicated_pair

pytestmark = pytest.mark.slow

DATABASE = "clarity"
THREADS = ("create", "ingest", "ingest", "read")
WORKERS = len(THREADS)  # a worker per load thread: no request waits behind another in gunicorn
BATCH = 20  # readings per ingest
STEADY_SECONDS = 1.5  # of load before the failure, and of nothing but 2xx after recovery
# From the primary's death to the promotion: about what an automated failover takes (Patroni's
# ttl is 30 s), and long enough that psycopg_pool's default reconnection backoff (attempts about
# 1, 3, 7, 15, 31 s after the failure) would leave the pool's next attempt over 10 s after it.
OUTAGE_SECONDS = 17.0
RECOVERY_SECONDS = 10.0  # from the promotion to the first 2xx after the last failure
POOL_TIMEOUT = Settings().pool_timeout  # the default CLARITY_DB_POOL_TIMEOUT, which the test keeps
LATENCY_BOUND = POOL_TIMEOUT + 1.5  # no request hangs past the pool timeout (plus the work itself)
EPOCH = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)


@pytest.fixture
def pair(tmp_path):
    """A primary and a synchronous standby holding a provisioned database; both stopped and
    deleted after the test."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    with replicated_pair(checkout / ".var") as pair:
        yield pair


def test_requests_answer_503_during_failover_and_2xx_within_seconds_of_promotion_losing_no_write(
        pair, start_gunicorn):
    app_password, provider_email = provision(pair)
    served = start_gunicorn(DATABASE_URL=pair.url(APP_ROLE, app_password, DATABASE), WEB_CONCURRENCY=str(WORKERS),
                            CLARITY_RATE_LIMIT_ENABLED="0", CLARITY_AUDIT_SEAL_INTERVAL_SECONDS="0.5")
    api = next(served) + "/api/v1"
    try:
        load = Load(api, provider_email)
        with load:
            timeline = fail_over(pair, load)
        unsealed_left = wait_until_sealed(pair)
    finally:
        served.close()

    figures = Figures.of(load.responses, timeline)
    print(f"\n{figures}")
    missing = missing_writes(pair, load.ledger)
    print(f"{len(load.ledger.patients)} patient creates and {len(load.ledger.batches)} batches "
          f"({sum(n for _, n in load.ledger.batches.values())} readings) acknowledged, {missing} missing; "
          f"{in_doubt_batches(pair, load.ledger)} of {len(load.ledger.unanswered)} batches answered 503 "
          "were committed anyway")
    verified = audit_verify(pair)
    print(verified.stdout.strip())

    assert figures.errors == [], "requests answered neither 2xx nor 503 with Retry-After"
    assert figures.unavailable > 0, "the outage was never seen"
    assert figures.max_latency <= LATENCY_BOUND
    assert figures.recovered_after_promotion is not None
    assert figures.recovered_after_promotion <= RECOVERY_SECONDS
    assert figures.ok_after_recovery >= WORKERS
    assert load.ledger.patients and load.ledger.batches
    assert missing == {"patients": [], "batches": []}
    assert unsealed_left == 0
    assert verified.returncode == 0 and verified.stdout.startswith("OK"), verified.stdout + verified.stderr


def provision(pair) -> tuple[str, str]:
    """Migrate the database on the primary, create the app's role and a provider; return the
    role's password and the provider's email."""
    app_password = secrets.token_urlsafe(24)
    localpg.provision(pair.primary, DATABASE, app_password)
    email = f"provider-{uuid.uuid4().hex[:8]}@clarity.test"
    with psycopg.connect(pair.primary.url(database=DATABASE), autocommit=True) as owner:
        owner.execute("INSERT INTO users (email, display_name, role, password_hash) "
                      "VALUES (%s, 'Failover provider', 'provider', %s)",
                      (email, Passwords(time_cost=1, memory_kib=1024).hash(E2E_PASSWORD)))
    return app_password, email


@dataclasses.dataclass
class Timeline:
    killed: float
    promoting: float  # pg_ctl promote started
    promoted: float  # pg_ctl promote returned: the standby accepts writes
    ended: float


def fail_over(pair, load: "Load") -> Timeline:
    """Kill the primary under load, promote the standby OUTAGE_SECONDS later, and keep the load
    on until every request has answered 2xx for STEADY_SECONDS (or RECOVERY_SECONDS are over)."""
    time.sleep(STEADY_SECONDS)
    assert load.ok_count() > 0, "no request succeeded before the failure"
    pair.wait_until_synchronous(timeout=1)  # every commit so far waited for the standby's flush
    killed = time.monotonic()
    pair.stop_primary_immediately()
    time.sleep(OUTAGE_SECONDS)
    promoting = time.monotonic()
    pair.promote_standby()
    promoted = time.monotonic()
    deadline = promoting + RECOVERY_SECONDS + STEADY_SECONDS
    while time.monotonic() < deadline and not load.steady_since(promoted):
        time.sleep(0.1)
    return Timeline(killed, promoting, promoted, time.monotonic())


@dataclasses.dataclass
class Response:
    thread: str
    started: float
    ended: float
    status: int | None  # None: no HTTP answer (the error's type is in ``detail``)
    retry_after: str | None
    detail: str
    body: object = None  # the JSON of a 2xx

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def unavailable(self) -> bool:
        return self.status == 503 and bool(self.retry_after)


@dataclasses.dataclass
class Ledger:
    """The writes the API acknowledged, and the batches it answered 503."""

    patients: list = dataclasses.field(default_factory=list)  # ids of patients created (201)
    batches: dict = dataclasses.field(default_factory=dict)  # source device -> (patient id, readings stored)
    unanswered: list = dataclasses.field(default_factory=list)  # source devices of batches answered 503


class Load:
    """THREADS threads making requests as one provider until the block ends; every response is
    kept, every acknowledged write entered in the ledger."""

    def __init__(self, api: str, email: str):
        self.api = api
        self.headers = sign_in(api, email)
        self.targets = [self._create_patient() for _ in range(4)]  # what the ingests and reads use
        self.ledger = Ledger(patients=list(self.targets))
        self.responses: list[Response] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(kind, i), daemon=True)
                         for i, kind in enumerate(THREADS)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=20)

    def ok_count(self) -> int:
        with self._lock:
            return sum(r.ok for r in self.responses)

    def steady_since(self, since: float) -> bool:
        """Whether, for STEADY_SECONDS since ``since`` or the last failure after it, every
        request has answered 2xx, and every thread has had one such answer."""
        with self._lock:
            calm = max([since] + [r.ended for r in self.responses if not r.ok])
            answered = {r.thread for r in self.responses if r.ok and r.started > calm}
        return time.monotonic() - calm >= STEADY_SECONDS and answered == set(THREADS)

    def _create_patient(self) -> str:
        created = requests.post(f"{self.api}/patients", json=patient_body(), headers=self.headers, timeout=10)
        assert created.status_code == 201, created.text
        return created.json()["id"]

    def _run(self, kind: str, index: int) -> None:
        step = {"create": self._create, "ingest": self._ingest, "read": self._read}[kind]
        n = 0
        while not self._stop.is_set():
            step(self.targets[(index + n) % len(self.targets)], n)
            n += 1

    def _create(self, _patient: str, _n: int) -> None:
        response = self._request("create", "POST", "/patients", patient_body())
        if response.ok:
            with self._lock:
                self.ledger.patients.append(response.body["id"])

    def _ingest(self, patient: str, _n: int) -> None:
        device = f"batch-{uuid.uuid4().hex}"
        readings = [{"kind": "heart_rate", "value": 60 + i, "unit": "bpm", "source_device": device,
                     "recorded_at": (EPOCH - dt.timedelta(seconds=i)).isoformat()} for i in range(BATCH)]
        response = self._request("ingest", "POST", f"/patients/{patient}/biometrics", readings)
        with self._lock:
            if response.ok:
                self.ledger.batches[device] = (patient, response.body["stored"])
            elif response.status == 503:
                self.ledger.unanswered.append(device)

    def _read(self, patient: str, n: int) -> None:
        path = f"/patients/{patient}" if n % 2 else f"/patients/{patient}/biometrics?limit=50"
        self._request("read", "GET", path)

    def _request(self, thread: str, method: str, path: str, body=None) -> Response:
        started = time.monotonic()
        try:
            answer = requests.request(method, f"{self.api}{path}", json=body, headers=self.headers, timeout=15)
        except requests.RequestException as exc:
            response = Response(thread, started, time.monotonic(), None, None, type(exc).__name__)
        else:
            ok = 200 <= answer.status_code < 300
            response = Response(thread, started, time.monotonic(), answer.status_code,
                                answer.headers.get("Retry-After"), answer.text[:300], answer.json() if ok else None)
        with self._lock:
            self.responses.append(response)
        return response


def sign_in(api: str, email: str) -> dict:
    login = requests.post(f"{api}/auth/tokens", json={"email": email, "password": E2E_PASSWORD}, timeout=10)
    assert login.status_code == 201, login.text
    return {"Authorization": f"Bearer {login.json()['token']}"}


@dataclasses.dataclass
class Figures:
    requests: int
    unavailable: int  # 503 with Retry-After
    errors: list  # anything else that was not 2xx
    max_latency: float
    first_ok_after_promotion: float | None  # seconds from the promotion's start to the first 2xx
    recovered_after_promotion: float | None  # ... to the first 2xx after the last failure: recovered
    ok_after_recovery: int
    promotion_took: float
    outage: float  # from the kill to the first 2xx after it

    @classmethod
    def of(cls, responses: list[Response], t: Timeline) -> "Figures":
        failures = [r for r in responses if not r.ok]
        last_failure = max([t.promoting] + [r.ended for r in failures])
        first_ok = min((r.ended for r in responses if r.ok and r.ended > t.promoting), default=None)
        recovered = min((r.ended for r in responses if r.ok and r.ended > last_failure), default=None)
        return cls(
            requests=len(responses),
            unavailable=sum(r.unavailable for r in responses),
            errors=[(r.thread, r.status, r.detail) for r in failures if not r.unavailable],
            max_latency=max(r.ended - r.started for r in responses),
            first_ok_after_promotion=None if first_ok is None else first_ok - t.promoting,
            recovered_after_promotion=None if recovered is None else recovered - t.promoting,
            ok_after_recovery=sum(r.ok and r.started > last_failure for r in responses),
            promotion_took=t.promoted - t.promoting,
            outage=(first_ok or t.ended) - t.killed,
        )

    def __str__(self) -> str:
        first_ok, recovered = ("never" if s is None else f"{s:.2f} s"
                               for s in (self.first_ok_after_promotion, self.recovered_after_promotion))
        return (f"{self.requests} requests; {self.unavailable} answered 503 with Retry-After, "
                f"{len(self.errors)} other failures; longest request {self.max_latency:.2f} s; "
                f"promotion took {self.promotion_took:.2f} s; first 2xx {first_ok} and recovered (2xx "
                f"after the last failure) {recovered} after the promotion started, then "
                f"{self.ok_after_recovery} requests all 2xx; outage seen by clients {self.outage:.2f} s")


def missing_writes(pair, ledger: Ledger) -> dict:
    """The acknowledged writes the promoted server lacks: patient ids, and batches whose
    readings it holds fewer of than the API said it stored."""
    with psycopg.connect(pair.standby.url(database=DATABASE), autocommit=True) as conn:
        found = {row[0] for row in conn.execute("SELECT id::text FROM patients WHERE id = ANY(%s::uuid[])",
                                                (ledger.patients,))}
        counted = dict(conn.execute("SELECT source_device, count(*) FROM biometric_readings "
                                    "WHERE source_device = ANY(%s) GROUP BY source_device",
                                    (list(ledger.batches),)).fetchall())
    return {"patients": [p for p in ledger.patients if p not in found],
            "batches": [(device, stored, counted.get(device, 0)) for device, (_, stored) in ledger.batches.items()
                        if counted.get(device, 0) < stored]}


def in_doubt_batches(pair, ledger: Ledger) -> int:
    """How many batches answered 503 were committed all the same (their commit was in flight
    when the primary died): a client retrying them finds them as duplicates."""
    with psycopg.connect(pair.standby.url(database=DATABASE), autocommit=True) as conn:
        return conn.execute("SELECT count(DISTINCT source_device) FROM biometric_readings "
                            "WHERE source_device = ANY(%s)", (ledger.unanswered,)).fetchone()[0]


def wait_until_sealed(pair, timeout: float = 10) -> int:
    """Wait for gunicorn's background sealers to seal every event on the promoted server;
    return how many are left unsealed."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(pair.standby.url(database=DATABASE), autocommit=True) as conn:
        while True:
            left = conn.execute("SELECT count(*) FROM audit_events e WHERE NOT EXISTS "
                                "(SELECT 1 FROM audit_seals s WHERE s.event_id = e.id)").fetchone()[0]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)


def audit_verify(pair) -> subprocess.CompletedProcess:
    """``flask --app wsgi audit verify`` against the promoted server, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARITY_") and k != "DATABASE_URL"}
    env["CLARITY_MIGRATION_DATABASE_URL"] = pair.standby.url(database=DATABASE)
    return subprocess.run([str(BIN / "flask"), "--app", "wsgi", "audit", "verify", "--max-unsealed-seconds", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
