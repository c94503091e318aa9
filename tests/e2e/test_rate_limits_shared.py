"""Rate limits live in Redis, so every gunicorn worker (and instance) counts against the same
limit; without Redis each process would count on its own."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.e2e.conftest import E2E_PASSWORD

pytestmark = pytest.mark.slow
LIMIT = 6


def signed_in(base, email) -> dict:
    response = requests.post(f"{base}/api/v1/auth/tokens", json={"email": email, "password": E2E_PASSWORD}, timeout=10)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}", "Connection": "close"}


def hammer(base, headers, n=40) -> list[int]:
    """n reads from 8 threads, a new connection each, so both workers take some."""
    def one(_):
        return requests.get(f"{base}/api/v1/users/me", headers=headers, timeout=10).status_code
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def test_two_workers_share_one_limit_through_redis(start_gunicorn, provider_email, redis_url):
    serving = start_gunicorn(REDIS_URL=redis_url, CLARITY_RATE_LIMIT=f"{LIMIT} per minute")
    base = next(serving)
    try:
        statuses = hammer(base, signed_in(base, provider_email))
    finally:
        serving.close()
    assert statuses.count(200) == LIMIT
    assert statuses.count(429) == len(statuses) - LIMIT


def test_without_redis_each_worker_counts_alone(start_gunicorn, provider_email):
    """The control: the same load is spread over both workers, so per-process counters let
    more than the limit through. (It shows the test above could fail.) A worker still starting
    (it hashes a decoy password first) may leave the first round to the other: another round,
    within the same minute, then reaches it; with one shared limit no round would pass more."""
    serving = start_gunicorn(CLARITY_RATE_LIMIT=f"{LIMIT} per minute")
    base = next(serving)
    statuses = []
    try:
        headers = signed_in(base, provider_email)
        for _ in range(5):
            statuses += hammer(base, headers)
            if statuses.count(200) > LIMIT:
                break
            time.sleep(0.5)
    finally:
        serving.close()
    assert LIMIT < statuses.count(200) <= 2 * LIMIT
