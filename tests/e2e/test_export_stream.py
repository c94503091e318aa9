"""The FHIR export streamed through gunicorn: 50,000 readings (bench/export_soak.py runs a
million with ``make soak-export``) arrive line by line while the worker's memory stays flat,
and a failure mid-stream cuts the connection and leaves no PHI in the log."""
from __future__ import annotations

import time

import psycopg
import pytest
import requests

from bench.export_soak import copy_readings, memory_kib, reset_peak, stream_export
from clarity import localnginx
from clarity.localpg import free_port
from tests.conftest import patient_body
from tests.e2e.conftest import E2E_PASSWORD, gunicorn_workers

pytestmark = pytest.mark.slow

READINGS = 50_000


@pytest.fixture
def served(start_gunicorn, server, database, provider_email):
    """One sync worker (the one measured) serving a provider's patient with READINGS readings:
    (base URL, token, patient)."""
    yield from serve_patient(start_gunicorn, server, database, provider_email)


def serve_patient(start_gunicorn, server, database, provider_email, **env):
    served = start_gunicorn(WEB_CONCURRENCY="1", CLARITY_RATE_LIMIT_ENABLED="0", **env)
    base = next(served)
    login = requests.post(f"{base}/api/v1/auth/tokens", json={"email": provider_email, "password": E2E_PASSWORD},
                          timeout=10)
    token = login.json()["token"]
    patient = requests.post(f"{base}/api/v1/patients", json=patient_body(),
                            headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    copy_readings(server.url(database), patient["id"], READINGS)
    try:
        yield base, token, patient
    finally:
        served.close()


def test_fifty_thousand_readings_stream_with_the_workers_memory_flat(served):
    base, token, patient = served
    (worker,) = gunicorn_workers(base)
    stream_export(base, token, patient["id"])  # warm-up: every import and pool connection made
    reset_peak(worker)
    before = memory_kib(worker, "VmRSS")

    lines, size = stream_export(base, token, patient["id"])

    growth_kib = memory_kib(worker, "VmHWM") - before
    assert lines == READINGS + 1
    # Held whole, the body (about 36 MB) would raise the peak by at least its size; streamed,
    # the worker holds one fetch of rows and one chunk of lines at a time.
    assert growth_kib * 1024 < size / 4, (growth_kib, size)


def test_an_export_longer_than_the_worker_timeout_is_not_killed(start_gunicorn, server, database, provider_email):
    """A sync worker reports in only between requests; the export reports in as it streams
    (clarity.heartbeat), so gunicorn does not take a worker streaming for longer than
    CLARITY_WORKER_TIMEOUT (4 s here, read over at least 6 s) for a stuck one."""
    served = serve_patient(start_gunicorn, server, database, provider_email, CLARITY_WORKER_TIMEOUT="4")
    base, token, patient = next(served)
    try:
        lines = 0
        with requests.get(f"{base}/api/v1/patients/{patient['id']}/export", stream=True, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as response:
            started = time.monotonic()
            for line in response.iter_lines(chunk_size=64 * 1024):
                lines += bool(line)
                if lines % 100 == 0:
                    time.sleep(0.012)
        assert lines == READINGS + 1
        assert time.monotonic() - started > 4, "read faster than the timeout: this test would not test it"
    finally:
        served.close()


def test_a_failure_mid_stream_cuts_the_connection_and_logs_no_phi(served, server, database, tmp_path):
    base, token, patient = served
    cut_mid_stream(base, token, patient, server, database)
    time.sleep(0.5)  # gunicorn writes its log line as it closes the connection
    log = (tmp_path / "gunicorn.log").read_text()
    assert "a patient export stopped mid-stream" in log
    for value in (patient["last_name"], patient["mrn"], patient["email"]):
        assert value not in log


def test_behind_nginx_a_cut_stream_still_reaches_the_client_as_an_error(served, server, database):
    """nginx speaks HTTP/1.1 to gunicorn, so the export comes chunked and nginx can tell a cut
    stream from a finished one (over HTTP/1.0 the client got a short body that looked whole)."""
    base, token, patient = served
    listen = f"127.0.0.1:{free_port()}"
    with localnginx.running(listen, base.removeprefix("http://")):
        cut_mid_stream(f"http://{listen}", token, patient, server, database)


def cut_mid_stream(base, token, patient, server, database) -> None:
    """Start the patient's export from ``base``, end its database session once the first bytes
    are in, and check the client sees the stream fail rather than end."""
    with requests.get(f"{base}/api/v1/patients/{patient['id']}/export", stream=True, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status_code == 200
        chunks = response.iter_content(chunk_size=64 * 1024)
        assert b'"resourceType":"Patient"' in next(chunks)
        # The worker now waits on the socket, its snapshot open: end that session under it.
        with psycopg.connect(server.url(database), autocommit=True) as owner:
            deadline = time.monotonic() + 10
            while not owner.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                                    " AND query LIKE %s", (database, "%FETCH FORWARD%")).fetchall():
                assert time.monotonic() < deadline, "no export session found"
                time.sleep(0.05)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for _ in chunks:
                pass
