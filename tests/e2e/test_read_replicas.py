"""Heavy reads on an asynchronous streaming replica (issue 10).

gunicorn serves DATABASE_URL on the primary and CLARITY_DATABASE_REPLICA_URL on a replica made
with pg_basebackup (tests/e2e/standby.py). Replay is paused on the replica so that what it
answers is visibly stale: a list then misses a patient created since, while GET by id (primary)
finds it; once the replica's lag passes CLARITY_REPLICA_MAX_LAG_SECONDS the list falls back to
the primary; with the replica stopped, lists answer 200 from the primary without waiting for a
pool timeout each time. Audit events of reads are written on the primary whatever answered.
"""
from __future__ import annotations

import datetime as dt
import time
import uuid

import psycopg
import pytest
import requests

from clarity import localpg
from clarity.config import Settings
from clarity.replica import REPLICA_CHECKOUT_TIMEOUT_SECONDS
from clarity.security.passwords import Passwords
from tests.conftest import APP_ROLE, patient_body
from tests.e2e.conftest import E2E_PASSWORD
from tests.e2e.standby import asynchronous_pair
from tests.e2e.test_failover import DATABASE, provision, sign_in

pytestmark = pytest.mark.slow

LAG_LIMIT = 3.0  # CLARITY_REPLICA_MAX_LAG_SECONDS here: the stale reads happen well within it
FAST = 0.3  # seconds: a list answered without waiting for the replica


@pytest.fixture
def served(tmp_path, start_gunicorn):
    """(api base URL, pair, provider headers, admin headers, metrics URL): one gunicorn worker
    (the replica's state is per process) reading on an asynchronous replica; all stopped after."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    with asynchronous_pair(checkout / ".var") as pair:
        app_password, provider_email = provision(pair)
        admin_email = add_admin(pair)
        metrics_bind = f"127.0.0.1:{localpg.free_port()}"
        server = start_gunicorn(
            DATABASE_URL=pair.primary.url(APP_ROLE, app_password, DATABASE),
            CLARITY_DATABASE_REPLICA_URL=pair.standby.url(APP_ROLE, app_password, DATABASE),
            CLARITY_REPLICA_MAX_LAG_SECONDS=str(LAG_LIMIT), WEB_CONCURRENCY="1", CLARITY_RATE_LIMIT_ENABLED="0",
            CLARITY_AUDIT_SEAL_INTERVAL_SECONDS="0", CLARITY_METRICS_BIND=metrics_bind)
        try:
            api = next(server) + "/api/v1"
            yield api, pair, sign_in(api, provider_email), sign_in(api, admin_email), f"http://{metrics_bind}/metrics"
        finally:
            server.close()


def test_lists_are_read_on_the_replica_until_its_lag_passes_the_limit(served):
    api, pair, provider, admin, metrics_url = served
    known = create_patient(api, provider)
    ingest(api, provider, known, "before-pause")
    assert known in list_patient_ids(api, provider)
    pair.wait_until_replayed()
    assert count_list_events(pair.primary) == count_list_events(pair.standby) == 1
    pair.pause_replay()  # the replica's lag counts from the last commit it replayed, just now

    started = time.monotonic()
    fresh = create_patient(api, provider)
    ingest(api, provider, known, "after-pause")
    listed = list_patient_ids(api, provider)
    searched = post(api, provider, "/patients/search", {"last_name": "Lovelace", "limit": 100})
    readings = get(api, provider, f"/patients/{known}/biometrics")
    summary = get(api, provider, f"/patients/{known}/biometrics/summary")
    audit_trail = get(api, admin, f"/audit-events?patient_id={fresh}")
    by_id = requests.get(f"{api}/patients/{fresh}", headers=provider, timeout=10)
    stale_for = time.monotonic() - started

    assert stale_for < LAG_LIMIT - 1, f"the stale reads took {stale_for:.1f} s: too slow to tell"
    assert known in listed and fresh not in listed  # the replica had not replayed the create
    assert {p["id"] for p in searched["items"]} == set(listed)
    assert by_id.status_code == 200  # a read by id is on the primary
    assert {r["source_device"] for r in readings} == {"before-pause"}
    assert [b["count"] for b in summary["buckets"]] == [1]
    assert audit_trail == []  # the patient's create event is not on the replica yet
    assert count_list_events(pair.primary) == 2 and count_list_events(pair.standby) == 1
    assert 0 <= replica_lag(metrics_url) <= LAG_LIMIT

    deadline = started + LAG_LIMIT + 5
    while fresh not in (listed := list_patient_ids(api, provider)):
        assert time.monotonic() < deadline, "the list never fell back to the primary"
        time.sleep(0.2)
    fell_back_after = time.monotonic() - started

    assert fell_back_after >= LAG_LIMIT - 1  # not before the lag passed the limit
    assert {r["source_device"] for r in get(api, provider, f"/patients/{known}/biometrics")} == {
        "before-pause", "after-pause"}
    assert [e["event_type"] for e in get(api, admin, f"/audit-events?patient_id={fresh}")][-1] == "patient.create"
    assert replica_lag(metrics_url) > LAG_LIMIT


def test_with_the_replica_stopped_lists_answer_from_the_primary_without_waiting_each_time(served):
    api, pair, provider, _admin, metrics_url = served
    known = create_patient(api, provider)
    pair.wait_until_replayed()
    assert known in list_patient_ids(api, provider)
    pair.stop_standby()
    time.sleep(2.5)  # idle long enough that the pool checks the connection (clarity.db.IDLE_CHECK_SECONDS)

    fresh = create_patient(api, provider)
    timings = []
    for _ in range(10):
        started = time.monotonic()
        listed = list_patient_ids(api, provider)
        timings.append(time.monotonic() - started)
        assert {known, fresh} <= set(listed)
    readings = get(api, provider, f"/patients/{known}/biometrics")

    print(f"\nlist latencies with the replica down: {', '.join(f'{t:.3f}' for t in timings)} s")
    assert timings[0] < REPLICA_CHECKOUT_TIMEOUT_SECONDS + 1 < Settings().pool_timeout
    assert max(timings[1:]) < FAST  # the replica is skipped after the first failure
    assert readings == []
    assert replica_lag(metrics_url) == float("inf")


def add_admin(pair) -> str:
    email = f"admin-{uuid.uuid4().hex[:8]}@clarity.test"
    with psycopg.connect(pair.primary.url(database=DATABASE), autocommit=True) as owner:
        owner.execute("INSERT INTO users (email, display_name, role, password_hash) "
                      "VALUES (%s, 'Replica admin', 'admin', %s)",
                      (email, Passwords(time_cost=1, memory_kib=1024).hash(E2E_PASSWORD)))
    return email


def count_list_events(cluster) -> int:
    with psycopg.connect(cluster.url(database=DATABASE), autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM audit_events WHERE event_type = 'patient.list'").fetchone()[0]


def create_patient(api: str, headers: dict) -> str:
    return post(api, headers, "/patients", patient_body())["id"]


def ingest(api: str, headers: dict, patient: str, device: str) -> None:
    recorded_at = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).isoformat()
    post(api, headers, f"/patients/{patient}/biometrics",
         [{"kind": "heart_rate", "value": 70, "unit": "bpm", "source_device": device, "recorded_at": recorded_at}])


def list_patient_ids(api: str, headers: dict) -> list[str]:
    return [p["id"] for p in get(api, headers, "/patients?limit=100")]


def get(api: str, headers: dict, path: str):
    response = requests.get(f"{api}{path}", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def post(api: str, headers: dict, path: str, body):
    response = requests.post(f"{api}{path}", json=body, headers=headers, timeout=10)
    assert response.status_code in (200, 201), response.text
    return response.json()


def replica_lag(url: str) -> float:
    for line in requests.get(url, timeout=5).text.splitlines():
        if line.startswith("clarity_db_replica_lag_seconds "):
            return float(line.split()[1])
    raise AssertionError("no clarity_db_replica_lag_seconds in the metrics")
