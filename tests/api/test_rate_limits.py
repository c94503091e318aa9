"""API rate limits on Redis: per principal when signed in, per address when anonymous,
expensive routes costing more, 429 with Retry-After, no PHI or token in any key, and a request
never failing because Redis is down."""
from __future__ import annotations

import socket
import uuid

import pytest
import redis

from clarity import create_app
from tests.conftest import make_settings, patient_body


@pytest.fixture
def limited(server, test_database, keyring, conn, redis_url):
    """Build an app with limits on (Redis at ``redis_url`` unless told otherwise), sharing the
    test's rolled-back connection; each gets a fresh Redis database."""
    redis.Redis.from_url(redis_url).flushdb()
    made = []

    def build(**overrides):
        values = dict(rate_limit_enabled=True, redis_url=redis_url, rate_limit="5 per minute",
                      rate_limit_anonymous="3 per minute", rate_limit_expensive_cost=3)
        values.update(overrides)
        app = create_app(make_settings(server, test_database, **values), keyring=keyring)
        app.extensions["clarity"].db.use_connection(conn)
        made.append(app)
        return app

    yield build
    for app in made:
        app.extensions["clarity"].db.use_connection(None)


def get_me(client, staff):
    return client.get("/api/v1/users/me", headers=staff.headers)


def test_a_principal_gets_429_with_retry_after_past_the_limit(limited, make_staff):
    client, provider = limited().test_client(), make_staff("provider")
    answers = [get_me(client, provider) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert answers[0].headers["X-RateLimit-Limit"] == "5"
    assert answers[4].headers["X-RateLimit-Remaining"] == "0"
    refused = answers[5]
    assert refused.mimetype == "application/problem+json"
    assert 0 < int(refused.headers["Retry-After"]) <= 60


def test_one_budget_covers_every_route_a_principal_calls(limited, make_staff):
    client, provider = limited().test_client(), make_staff("provider")
    routes = ["/api/v1/users/me", "/api/v1/auth/sessions", f"/api/v1/patients/{uuid.uuid4()}"]
    answers = [client.get(routes[i % 3], headers=provider.headers).status_code for i in range(6)]
    assert answers == [200, 200, 404, 200, 200, 429]


def test_one_flooding_account_does_not_slow_a_colleague_behind_the_same_address(limited, make_staff):
    client = limited().test_client()
    flooder, colleague = make_staff("provider"), make_staff("provider")
    for _ in range(6):
        get_me(client, flooder)
    assert get_me(client, flooder).status_code == 429
    assert get_me(client, colleague).status_code == 200


def test_expensive_routes_cost_more_than_single_reads(limited, make_staff):
    client, provider = limited().test_client(), make_staff("provider")
    search = lambda: client.post("/api/v1/patients/search", json={"mrn": "x"}, headers=provider.headers)  # noqa: E731
    assert search().status_code == 200  # costs 3 of 5
    assert get_me(client, provider).status_code == 200  # 4 of 5
    assert search().status_code == 429  # would be 7
    assert get_me(client, provider).status_code == 200  # 5 of 5: a refused request costs nothing


def test_anonymous_sign_in_is_limited_per_address(limited):
    client = limited().test_client()
    body = {"email": "nobody@clarity.test", "password": "not the password"}
    here = [client.post("/api/v1/auth/tokens", json=body).status_code for _ in range(4)]
    assert here == [401, 401, 401, 429]
    elsewhere = client.post("/api/v1/auth/tokens", json=body, environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert elsewhere.status_code == 401


def test_the_token_is_checked_before_the_limit_and_the_limit_before_the_role(limited, make_staff):
    client, auditor = limited().test_client(), make_staff("auditor")
    assert [client.get("/api/v1/users/me").status_code for _ in range(6)] == [401] * 6  # nobody to count
    answers = [client.get(f"/api/v1/patients/{uuid.uuid4()}", headers=auditor.headers).status_code for _ in range(6)]
    assert answers == [403] * 5 + [429]


def test_health_and_docs_are_not_limited(limited):
    client = limited().test_client()
    assert {client.get("/health/live").status_code for _ in range(10)} == {200}
    assert {client.get("/api/v1/openapi.json").status_code for _ in range(10)} == {200}


def test_redis_keys_hold_digests_never_tokens_emails_or_phi(limited, make_staff, redis_url):
    client, provider = limited(rate_limit="100 per minute").test_client(), make_staff("provider")
    body = patient_body(last_name="Canarysurname")
    assert client.post("/api/v1/patients", json=body, headers=provider.headers).status_code == 201
    client.post("/api/v1/auth/tokens", json={"email": provider.email, "password": "wrong password!"})
    store = redis.Redis.from_url(redis_url)
    dump = b" ".join(store.keys("*") + [store.dump(k) or b"" for k in store.keys("*")])
    assert dump, "the limiter wrote nothing to Redis"
    for secret in (provider.token, provider.email, str(provider.id), "Canarysurname", body["mrn"], "127.0.0.1"):
        assert secret.encode() not in dump, secret


def test_redis_down_fails_open_to_a_per_process_limit(limited, make_staff, caplog):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    client, provider = limited(redis_url=dead).test_client(), make_staff("provider")
    answers = [get_me(client, provider).status_code for _ in range(7)]
    assert answers == [200] * 5 + [429] * 2  # still limited, in this process's memory
    warnings = [r for r in caplog.records if "falling back to in-memory" in r.getMessage()]
    assert len(warnings) == 1


def test_limits_off_serve_everything(limited, make_staff):
    client, provider = limited(rate_limit_enabled=False).test_client(), make_staff("provider")
    assert {get_me(client, provider).status_code for _ in range(10)} == {200}
    assert "X-RateLimit-Limit" not in get_me(client, provider).headers


def test_a_malformed_limit_is_refused_at_start_up():
    from clarity.config import ConfigError, from_env
    with pytest.raises(ConfigError, match="CLARITY_RATE_LIMIT"):
        from_env({"CLARITY_RATE_LIMIT": "lots"})
    assert from_env({"CLARITY_RATE_LIMIT": "10/second; 600/minute", "REDIS_URL": "redis://x:1/0"}).redis_url


def test_no_key_is_shared_between_two_principals(limited, make_staff, redis_url):
    client = limited().test_client()
    for staff in (make_staff("provider"), make_staff("provider")):
        get_me(client, staff)
    keys = redis.Redis.from_url(redis_url).keys("*")
    principals = {k for k in keys if b"principal" in k}
    assert len(principals) >= 2, keys
