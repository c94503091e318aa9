"""Metrics under gunicorn: every worker's counts, summed by the master and served on an address
of their own (CLARITY_METRICS_BIND), never on the API's; labels name route templates, never a
path, an id, an email or a token."""
from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from clarity.localpg import free_port
from clarity.metrics import UNMATCHED
from tests.conftest import patient_body
from tests.e2e.conftest import E2E_PASSWORD

pytestmark = pytest.mark.slow
WORKERS_POOL_MAX = 2 * 8  # two workers, CLARITY_DB_POOL_MAX's default each


class Scrape:
    def __init__(self, text: str):
        self.text = text
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name, **labels) -> float | None:
        found = [s.value for s in self.samples if s.name == name and s.labels.items() >= labels.items()]
        return sum(found) if found else None

    def labels(self, name, label) -> set:
        return {s.labels[label] for s in self.samples if s.name == name}


def scrape(url, until=lambda scrape: True, timeout=8.0) -> Scrape:
    """The metrics at ``url``, once ``until`` holds for them (the pool is sampled each second)."""
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(url, timeout=5)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
        result = Scrape(response.text)
        if until(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def worker_pids(log_path: Path) -> list[int]:
    return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", log_path.read_text())]


def test_requests_sign_ins_refusals_and_the_audit_backlog_are_served_on_the_metrics_address_only(
        start_gunicorn, provider_email, session_app, tmp_path):
    port = free_port()
    serving = start_gunicorn(CLARITY_METRICS_BIND=f"127.0.0.1:{port}", CLARITY_RATE_LIMIT="8 per minute",
                             CLARITY_LOGIN_MAX_FAILURES_PER_PAIR="1", CLARITY_AUDIT_SEAL_INTERVAL_SECONDS="0.2")
    base = next(serving)
    api = f"{base}/api/v1"
    try:
        login = requests.post(f"{api}/auth/tokens", json={"email": provider_email, "password": E2E_PASSWORD},
                              timeout=10)
        wrong, throttled = (requests.post(f"{api}/auth/tokens", json={"email": provider_email, "password": "not it"},
                                          timeout=10) for _ in range(2))
        token = login.json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        body = patient_body()
        patient_id = requests.post(f"{api}/patients", json=body, headers=auth, timeout=10).json()["id"]
        duplicate = requests.post(f"{api}/patients", json=body, headers=auth, timeout=10)
        read = requests.get(f"{api}/patients/{patient_id}", headers=auth, timeout=10)
        missing = requests.get(f"{base}/no/such/{patient_id}", timeout=10)
        api_metrics = requests.get(f"{base}/metrics", timeout=10)
        statuses = []
        while 429 not in statuses and len(statuses) < 40:  # each worker counts alone (no Redis)
            statuses.append(requests.get(f"{api}/users/me", headers=auth, timeout=10).status_code)
        metrics = scrape(f"http://127.0.0.1:{port}/metrics", until=lambda m: (
            m.value("clarity_db_pool_max_connections") == WORKERS_POOL_MAX
            and m.value("clarity_audit_last_seal_age_seconds") is not None))
    finally:
        serving.close()

    assert [r.status_code for r in (login, wrong, throttled, duplicate, read, missing)] == [201, 401, 429, 409, 200, 404]
    assert api_metrics.status_code == 404, "the API's port serves no metrics"
    assert 429 in statuses
    requests_total = "clarity_http_requests_total"
    assert metrics.value(requests_total, route="/api/v1/patients/<uuid:patient_id>", method="GET",
                         status="200") == 1
    assert metrics.value(requests_total, route="/api/v1/auth/tokens", method="POST", status="401") == 1
    assert metrics.value(requests_total, route=UNMATCHED, method="GET", status="404") == 2
    assert metrics.value(requests_total, route="/api/v1/users/me", status="429") >= 1
    assert metrics.value("clarity_http_request_duration_seconds_count",
                         route="/api/v1/patients/<uuid:patient_id>", method="GET") == 1
    assert metrics.value(requests_total, route="/api/v1/auth/tokens", method="POST", status="429") == 1
    assert [metrics.value("clarity_sign_ins_total", outcome=outcome) for outcome in ("success", "failure", "throttled")] \
        == [1, 1, 1]
    assert metrics.value("clarity_rate_limited_total", scope="principal") >= 1
    assert metrics.value("clarity_rate_limited_total", scope="address") == 0, "a sign-in throttle is no rate limit"
    assert metrics.value("clarity_db_errors_total", sqlstate_class="23") == 1, "the duplicate MRN"
    assert metrics.value("clarity_audit_events_written_total") >= 5  # three sign-ins, a create, a read
    assert metrics.value("clarity_audit_metrics_up") == 1
    assert metrics.value("clarity_audit_unsealed_events") >= 0
    assert 0 <= metrics.value("clarity_audit_last_seal_age_seconds") < 60
    assert metrics.value("clarity_db_pool_connections") >= 2
    assert metrics.value("clarity_db_pool_waiting_requests") == 0

    templates = {rule.rule for rule in session_app.url_map.iter_rules()} | {UNMATCHED}
    assert metrics.labels(requests_total, "route") <= templates
    for secret in (patient_id, token, provider_email, "not it", E2E_PASSWORD):
        assert secret not in metrics.text
    served_from = re.search(r"Metrics at \S+ \(files in (\S+)\)", (tmp_path / "gunicorn.log").read_text())
    assert not Path(served_from.group(1)).exists(), "the master removes the directory it made"


def test_a_dead_workers_live_gauges_go_while_its_counts_stay(start_gunicorn, tmp_path):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    stale = directory / "counter_999999.db"
    stale.write_bytes(b"not a metrics file")  # a previous run's: read, it would break every scrape
    port = free_port()
    serving = start_gunicorn(CLARITY_METRICS_BIND=f"127.0.0.1:{port}", PROMETHEUS_MULTIPROC_DIR=str(directory))
    next(serving)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert not stale.exists()
        scrape(url, until=lambda m: m.value("clarity_db_pool_max_connections") == WORKERS_POOL_MAX)
        dead, alive = worker_pids(tmp_path / "gunicorn.log")[:2]
        os.kill(dead, signal.SIGKILL)
        deadline = time.monotonic() + 8
        while len(worker_pids(tmp_path / "gunicorn.log")) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        after = scrape(url, until=lambda m: m.value("clarity_db_pool_max_connections") == WORKERS_POOL_MAX
                       and (directory / f"gauge_livesum_{worker_pids(tmp_path / 'gunicorn.log')[2]}.db").exists())
        files = set(os.listdir(directory))
    finally:
        serving.close()

    assert after.value("clarity_db_pool_max_connections") == WORKERS_POOL_MAX, "not three workers' pools"
    assert f"gauge_livesum_{dead}.db" not in files and f"gauge_livesum_{alive}.db" in files
    assert f"counter_{dead}.db" in files, "a dead worker's counts still add up"


def test_a_taken_metrics_address_is_logged_and_the_api_still_serves(start_gunicorn, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bind = "127.0.0.1:%d" % taken.getsockname()[1]
        serving = start_gunicorn(CLARITY_METRICS_BIND=bind)
        base = next(serving)  # ready: /health/ready answered 200
        try:
            live = requests.get(f"{base}/health/live", timeout=10)
        finally:
            serving.close()

    assert live.status_code == 200
    assert f"Metrics cannot listen on {bind} (Address already in use)" in (tmp_path / "gunicorn.log").read_text()
