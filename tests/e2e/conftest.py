"""Fixtures for end-to-end tests: a database of their own and gunicorn serving it."""
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

from clarity import localnginx
from clarity.db import MIGRATIONS_DIR
from clarity.localpg import free_port
from clarity.security.passwords import Passwords
from tests.conftest import APP_ROLE

ROOT = MIGRATIONS_DIR.parent
BIN = Path(sys.executable).parent
E2E_PASSWORD = "correct horse battery staple"


@pytest.fixture
def database(fresh_database):
    return fresh_database


@pytest.fixture
def provider_email(server, database):
    """A provider created directly in the database by its owner."""
    email = f"provider-{uuid.uuid4().hex[:8]}@clarity.test"
    password_hash = Passwords(time_cost=1, memory_kib=1024).hash(E2E_PASSWORD)
    with psycopg.connect(server.url(database), autocommit=True) as conn:
        conn.execute("INSERT INTO users (email, display_name, role, password_hash) "
                     "VALUES (%s, 'E2E provider', 'provider', %s)", (email, password_hash))
    return email


@pytest.fixture
def gunicorn(start_gunicorn):
    """Base URL of a gunicorn serving wsgi:app with two workers; stopped after the test."""
    yield from start_gunicorn()


@pytest.fixture
def start_gunicorn(server, database, keys, tmp_path):
    """``yield from start_gunicorn(**env)``: serve with extra environment; the log (access and
    application, both streams) is at ``tmp_path / "gunicorn.log"``."""
    return lambda **extra: _serve(server, database, keys, tmp_path, extra)


@pytest.fixture
def nginx(start_gunicorn):
    """Base URL of nginx (deploy/nginx.conf, as make run serves) on a free port in front of a
    gunicorn that trusts it for the client address (CLARITY_PROXY_COUNT=1); both stopped after."""
    served = start_gunicorn(CLARITY_PROXY_COUNT="1")
    upstream = next(served).removeprefix("http://")
    port = free_port()
    try:
        with localnginx.running(f"127.0.0.1:{port}", upstream):
            yield f"http://127.0.0.1:{port}"
    finally:
        served.close()


def gunicorn_workers(base: str) -> list[int]:
    """The workers of the gunicorn serving ``base``: the processes started with its
    CLARITY_BIND whose parent was too."""
    bind = f"CLARITY_BIND={base.removeprefix('http://')}".encode()
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if bind in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                found[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[1])
        except OSError:
            continue  # gone, or not ours to read
    return [pid for pid, parent in found.items() if parent in found]


def _serve(server, database, keys, tmp_path, extra):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARITY_") and k != "DATABASE_URL"}
    env.update(
        CLARITY_BIND=f"127.0.0.1:{port}",
        CLARITY_METRICS_BIND=f"127.0.0.1:{free_port()}",  # not the default 9464 another server may hold
        WEB_CONCURRENCY="2",
        DATABASE_URL=server.url(database, APP_ROLE),
        CLARITY_DATA_KEYS=f"test1:{keys['data']['test1']}",
        CLARITY_ACTIVE_DATA_KEY="test1",
        CLARITY_BLIND_INDEX_KEY=keys["blind"],
        CLARITY_ARGON2_TIME_COST="1",
        CLARITY_ARGON2_MEMORY_KIB="1024",
    )
    env.update(extra)
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "gunicorn exited:\n" + log_path.read_text()
            try:
                if requests.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass  # still booting (a loaded machine can take seconds to import the app)
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
