"""The connection pool under pressure and the health probes, over real pooled connections
(each app here has its own database and pool, not the shared test transaction)."""
from __future__ import annotations

import time

import psycopg
import pytest
from yoyo import get_backend, read_migrations

from clarity import create_app
from clarity.schema import yoyo_url
from clarity.db import MIGRATIONS_DIR
from clarity.localpg import free_port
from clarity.security.access import new_token
from tests.conftest import APP_ROLE, Server, make_settings, migrate, start_server

POOL_TIMEOUT = 0.5


@pytest.fixture
def database(fresh_database):
    return fresh_database


def ready_status(client) -> int:
    return client.get("/health/ready").status_code


def test_exhausted_pool_answers_503_with_retry_after_within_the_pool_timeout(server, database, make_app):
    app = make_app(make_settings(server, database, pool_min_size=1, pool_max_size=1, pool_timeout=POOL_TIMEOUT))
    client = app.test_client()
    db = app.extensions["clarity"].db
    headers = {"Authorization": "Bearer not-a-real-token"}
    assert client.get("/health/ready").status_code == 200

    with db.connection():  # the pool's only connection
        started = time.monotonic()
        response = client.get("/api/v1/users/me", headers=headers)
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["status"] == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert elapsed < POOL_TIMEOUT + 1.5
    # Once the connection is back in the pool the same request is served again.
    assert client.get("/api/v1/users/me", headers=headers).status_code == 401


def test_ready_is_503_when_the_database_is_down_and_200_after_it_returns(tmp_path, keyring):
    pg = start_server(tmp_path)
    app = None
    try:
        own = Server(pg)
        with psycopg.connect(own.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE clarity")
        migrate(own.url("clarity"))
        with psycopg.connect(own.url("clarity"), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN IN ROLE clarity_app")
        app = create_app(make_settings(own, "clarity", pool_min_size=1, pool_max_size=2, pool_timeout=POOL_TIMEOUT),
                         keyring=keyring)
        client = app.test_client()
        assert ready_status(client) == 200

        pg.terminate()  # stops the server, keeps its data directory and port
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert response.get_json()["status"] == "unavailable"

        pg.start()
        deadline = time.monotonic() + 10
        while ready_status(client) != 200:
            assert time.monotonic() < deadline, "the pool did not reconnect after the database came back"
            time.sleep(0.2)
    finally:
        if app is not None:
            app.extensions["clarity"].db.close()
        pg.stop()


def test_ready_is_503_when_migrations_are_not_at_head(server, database, make_app):
    app = make_app(make_settings(server, database, pool_timeout=POOL_TIMEOUT))
    client = app.test_client()
    assert ready_status(client) == 200

    backend = get_backend(yoyo_url(server.url(database)))
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        last = backend.to_rollback(migrations)[:1]
        with backend.lock():
            backend.rollback_migrations(last)
    finally:
        backend.connection.close()

    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "migration" in response.get_json()["detail"]


def test_live_is_200_without_a_database(server, make_app):
    nowhere = f"postgresql://{APP_ROLE}@127.0.0.1:{free_port()}/clarity"
    app = make_app(make_settings(server, "clarity", database_url=nowhere, pool_timeout=POOL_TIMEOUT))
    client = app.test_client()

    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 503


def test_connections_that_died_idle_in_the_pool_cost_no_request_an_error(server, database, make_app):
    """Backends killed while their connections sit idle in the pool (a restart, an idle timeout,
    an operator's pg_terminate_backend): the next requests find them dead at BEGIN, before
    anything ran, and start again on working connections instead of answering 503."""
    app = make_app(make_settings(server, database, pool_min_size=4, pool_max_size=4, pool_timeout=2.0))
    db = app.extensions["clarity"].db
    passwords = app.extensions["clarity"].passwords

    def staff(uow):
        user = uow.users.add(email="idle@clarity.test", display_name="Idle", role="provider",
                             password_hash=passwords.hash("correct horse battery"))
        token, digest = new_token()
        uow.tokens.add(user_id=user.id, token_hash=digest, max_age_seconds=600, client_addr=None)
        return token

    headers = {"Authorization": f"Bearer {db.run(staff)}"}
    client = app.test_client()
    db.open(wait=True)
    with psycopg.connect(server.url(database), autocommit=True) as owner:
        for _ in range(3):
            assert client.get("/api/v1/users/me", headers=headers).status_code == 200
            killed = owner.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND usename = %s AND state = 'idle'", (APP_ROLE,)).fetchone()[0]
            assert killed >= 1
            statuses = [client.get("/api/v1/users/me", headers=headers).status_code for _ in range(6)]
            assert statuses == [200] * 6
