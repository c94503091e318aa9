"""End to end: the API served by gunicorn (two sync workers, configured only by environment
variables, as in production) against PostgreSQL, driven over HTTP."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests

from clarity.db import MIGRATIONS_DIR
from clarity.localpg import free_port
from clarity.security.passwords import Passwords
from tests.conftest import APP_ROLE, patient_body

pytestmark = pytest.mark.slow

ROOT = MIGRATIONS_DIR.parent
BIN = Path(sys.executable).parent
PASSWORD = "correct horse battery staple"


@pytest.fixture
def database(fresh_database):
    return fresh_database


@pytest.fixture
def provider_email(server, database):
    """A provider created directly in the database by its owner."""
    email = f"provider-{uuid.uuid4().hex[:8]}@clarity.test"
    password_hash = Passwords(time_cost=1, memory_kib=1024).hash(PASSWORD)
    with psycopg.connect(server.url(database), autocommit=True) as conn:
        conn.execute("INSERT INTO users (email, display_name, role, password_hash) "
                     "VALUES (%s, 'E2E provider', 'provider', %s)", (email, password_hash))
    return email


@pytest.fixture
def gunicorn(server, database, keys, tmp_path):
    """Base URL of a gunicorn serving wsgi:app with two workers; stopped after the test."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARITY_") and k != "DATABASE_URL"}
    env.update(
        CLARITY_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        DATABASE_URL=server.url(database, APP_ROLE),
        CLARITY_DATA_KEYS=f"test1:{keys['data']['test1']}",
        CLARITY_ACTIVE_DATA_KEY="test1",
        CLARITY_BLIND_INDEX_KEY=keys["blind"],
        CLARITY_ARGON2_TIME_COST="1",
        CLARITY_ARGON2_MEMORY_KIB="1024",
    )
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, "gunicorn exited:\n" + log_path.read_text()
            try:
                if requests.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "gunicorn never became ready:\n" + log_path.read_text()
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_provider_manages_a_patient_over_http_from_login_to_logout(gunicorn, provider_email):
    api = f"{gunicorn}/api/v1"

    login = requests.post(f"{api}/auth/tokens", json={"email": provider_email, "password": PASSWORD}, timeout=10)
    assert login.status_code == 201, login.text
    headers = {"Authorization": f"Bearer {login.json()['token']}"}

    body = patient_body()
    created = requests.post(f"{api}/patients", json=body, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    patient_id = created.json()["id"]
    assert created.headers["Location"].endswith(f"/api/v1/patients/{patient_id}")

    read = requests.get(f"{api}/patients/{patient_id}", headers=headers, timeout=10)
    assert read.status_code == 200
    assert read.headers["Cache-Control"] == "no-store"
    assert read.json()["mrn"] == body["mrn"]
    assert read.json()["last_name"] == "Lovelace"

    updated = requests.patch(f"{api}/patients/{patient_id}", json={"phone": "+44 20 7946 0999"},
                             headers={**headers, "If-Match": read.headers["ETag"]}, timeout=10)
    assert updated.status_code == 200, updated.text
    assert updated.json()["phone"] == "+44 20 7946 0999"
    assert updated.headers["ETag"] != read.headers["ETag"]

    deleted = requests.delete(f"{api}/patients/{patient_id}",
                              headers={**headers, "If-Match": updated.headers["ETag"]}, timeout=10)
    assert deleted.status_code == 204, deleted.text
    gone = requests.get(f"{api}/patients/{patient_id}", headers=headers, timeout=10)
    assert gone.status_code == 404
    assert gone.headers["Content-Type"].startswith("application/problem+json")

    logout = requests.delete(f"{api}/auth/tokens/current", headers=headers, timeout=10)
    assert logout.status_code == 204, logout.text
    # Each request opens a new connection and may land on either worker: none may still accept
    # the revoked token.
    for _ in range(4):
        assert requests.get(f"{api}/users/me", headers=headers, timeout=10).status_code == 401
