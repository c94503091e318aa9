"""Idle and slow clients cannot take the service down: behind nginx (deploy/nginx.conf, as make
run serves), connections that send nothing and bodies that trickle in wait in nginx, and gunicorn's
sync workers go on answering. Without nginx the same clients hold every worker.

A bounded attack (300 idle + 20 slow-body connections) keeps these tests short; the full one
(1,000 + 50) and its latency figures are ``python -m bench.slow_clients``."""
from __future__ import annotations

import contextlib
import resource
import select
import socket
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import patient_body
from tests.e2e.conftest import E2E_PASSWORD

pytestmark = pytest.mark.slow

IDLE, SLOW_BODIES = 300, 20
FOUR_MIB = 4 * 1024 * 1024
# A sign-in (anyone may send one, and it reads its body) declaring the largest allowed body.
SLOW_HEAD = (b"POST /api/v1/auth/tokens HTTP/1.1\r\nHost: clarity\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n{" % FOUR_MIB)


@pytest.fixture(autouse=True)
def enough_open_files():
    """Room for the attack's sockets beside pytest's own files (the soft limit is often 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def idle_and_slow_clients(base: str):
    """IDLE connections to ``base`` that send nothing and SLOW_BODIES that send a sign-in's head
    and the first byte of its 4 MiB body; yields the sockets, all closed afterwards."""
    address = (urlsplit(base).hostname, urlsplit(base).port)
    sockets: list[socket.socket] = []
    try:
        for n in range(IDLE + SLOW_BODIES):
            sock = socket.create_connection(address, timeout=5)
            sockets.append(sock)
            if n >= IDLE:
                sock.sendall(SLOW_HEAD)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def still_open(sockets: list[socket.socket]) -> bool:
    """True when the server has neither answered nor closed any of ``sockets``."""
    with select.epoll() as poll:
        for sock in sockets:
            poll.register(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        return not poll.poll(0)


def sign_in(base: str, email: str, **headers) -> dict:
    response = requests.post(f"{base}/api/v1/auth/tokens", json={"email": email, "password": E2E_PASSWORD},
                             headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def test_behind_nginx_idle_and_slow_body_clients_leave_the_service_answering(nginx, provider_email):
    auth = sign_in(nginx, provider_email)
    created = requests.post(f"{nginx}/api/v1/patients", json=patient_body(), headers=auth, timeout=10)
    assert created.status_code == 201, created.text
    patient_url = f"{nginx}/api/v1/patients/{created.json()['id']}"

    with idle_and_slow_clients(nginx) as attack:
        for _ in range(5):
            assert requests.get(f"{nginx}/health/live", timeout=2).status_code == 200
            read = requests.get(patient_url, headers=auth, timeout=2)
            assert read.status_code == 200 and read.json()["last_name"] == "Lovelace"
        # The attack was in force throughout: nginx still holds every one of its connections.
        assert still_open(attack)


def test_without_nginx_the_same_clients_hold_every_sync_worker(gunicorn):
    assert requests.get(f"{gunicorn}/health/live", timeout=10).status_code == 200
    with idle_and_slow_clients(gunicorn):
        with pytest.raises(requests.Timeout):
            requests.get(f"{gunicorn}/health/live", timeout=2)


def test_nginx_takes_a_body_of_4_mib_and_refuses_a_larger_one_as_problem_json(nginx, provider_email):
    sign_in_body = b'{"email": "%s", "password": "wrong password"}' % provider_email.encode()
    largest = sign_in_body + b" " * (FOUR_MIB - len(sign_in_body))
    headers = {"Content-Type": "application/json"}

    reached_the_app = requests.post(f"{nginx}/api/v1/auth/tokens", data=largest, headers=headers, timeout=30)
    assert reached_the_app.status_code == 401, reached_the_app.text

    refused = requests.post(f"{nginx}/api/v1/auth/tokens", data=largest + b" ", headers=headers, timeout=30)
    assert refused.status_code == 413
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["status"] == 413
    assert refused.json()["request_id"] == refused.headers["X-Request-ID"]


def test_behind_nginx_the_recorded_client_address_is_the_peer_not_what_the_client_claims(nginx, provider_email):
    auth = sign_in(nginx, provider_email, **{"X-Forwarded-For": "203.0.113.7"})
    sessions = requests.get(f"{nginx}/api/v1/auth/sessions", headers=auth, timeout=10)
    assert sessions.status_code == 200, sessions.text
    current = [s for s in sessions.json() if s["current"]]
    assert [s["client_addr"] for s in current] == ["127.0.0.1"]
