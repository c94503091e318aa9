"""Fixtures: one PostgreSQL per session, migrated once; each test inside a rolled-back transaction.

The app connects as ``clarity_web``, a login member of the least-privileged ``clarity_app``
role, as in production. Tests that need real commits get a database cloned from the migrated
template (``fresh_database``).
"""
from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import psycopg
import pytest
import testing.postgresql
from psycopg import sql

from clarity import create_app, localpg, localredis, schema
from clarity.config import Settings
from clarity.security.access import new_token
from clarity.security.crypto import Keyring, generate_key
from clarity.config import decode_key

TEMPLATE = "clarity_template"
APP_ROLE = "clarity_web"


@dataclasses.dataclass
class Server:
    pg: testing.postgresql.Postgresql

    def url(self, database="postgres", user="postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.pg.settings['port']}/{database}"

    def create_database(self, name=None, template=TEMPLATE) -> str:
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with schema.owner_connection(self.url()) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
        return name

    def drop_database(self, name) -> None:
        with schema.owner_connection(self.url()) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def start_server(tmp: Path) -> testing.postgresql.Postgresql:
    initdb, postgres = localpg.server_wrappers(tmp / "bin")
    return testing.postgresql.Postgresql(
        initdb=initdb, postgres=postgres,
        postgres_args="-h 127.0.0.1 -F -c logging_collector=off -c max_connections=200 -c fsync=off "
                      "-c synchronous_commit=off -c full_page_writes=off",
    )


def migrate(url: str) -> None:
    schema.apply_migrations(url)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    pg = start_server(tmp_path_factory.mktemp("pgbin"))
    srv = Server(pg)
    with schema.owner_connection(srv.url()) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    migrate(srv.url(TEMPLATE))
    with schema.owner_connection(srv.url(TEMPLATE)) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE clarity_app").format(sql.Identifier(APP_ROLE)))
    yield srv
    pg.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A redis-server of the session's own, on a free port (never the machine's)."""
    redis = localredis.Redis(tmp_path_factory.mktemp("redis"))
    url = redis.start(attached=True)
    yield url
    redis.stop()


@pytest.fixture
def make_app(keyring):
    """Build apps with real pools from settings: ``make_app(settings)``; their pools are closed
    after the test."""
    apps = []

    def make(settings):
        app = checked(create_app(settings, keyring=keyring))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["clarity"].db.close()


@pytest.fixture
def fresh_database(server):
    """A database cloned from the migrated template, dropped after the test: for real commits."""
    name = server.create_database()
    try:
        yield name
    finally:
        server.drop_database(name)


@pytest.fixture(scope="session")
def keys():
    return {"data": {"test1": generate_key()}, "blind": generate_key()}


@pytest.fixture(scope="session")
def keyring(keys):
    return Keyring({k: decode_key(v, k) for k, v in keys["data"].items()}, "test1", decode_key(keys["blind"], "blind"))


def make_settings(server, database, **overrides) -> Settings:
    values = dict(env="test", database_url=server.url(database, APP_ROLE),
                  migration_database_url=server.url(database),
                  pool_min_size=1, pool_max_size=4, pool_timeout=2.0,
                  argon2_time_cost=1, argon2_memory_kib=1024,
                  # One app serves the whole session: its counters would carry over from test to
                  # test. tests/api/test_rate_limits.py builds apps with limits on.
                  rate_limit_enabled=False)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def test_database(server):
    return server.create_database("clarity_test")


@pytest.fixture(scope="session")
def session_conn(server, test_database):
    with psycopg.connect(server.url(test_database, APP_ROLE), autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def session_app(server, test_database, keyring):
    return checked(create_app(make_settings(server, test_database), keyring=keyring))


def checked(app):
    """Every response body is written both by its schema's compiled dump and by marshmallow,
    and a difference fails the request (clarity.api.dumps)."""
    app.config["CLARITY_CHECK_DUMPS"] = True
    return app


@pytest.fixture
def conn(session_conn):
    """The app role's connection, inside a transaction rolled back after the test."""
    with session_conn.transaction(force_rollback=True):
        yield session_conn


@pytest.fixture
def app(session_app, conn):
    session_app.extensions["clarity"].db.use_connection(conn)
    yield session_app
    session_app.extensions["clarity"].db.use_connection(None)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db(app):
    return app.extensions["clarity"].db


@dataclasses.dataclass
class Staff:
    id: uuid.UUID
    role: str
    email: str
    token: str
    password: str

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_staff(app, db):
    """Create a staff user with a live token: ``make_staff("provider")``."""
    passwords = app.extensions["clarity"].passwords

    def make(role="provider", password="correct horse battery"):
        email = f"{role}-{uuid.uuid4().hex[:8]}@clarity.test"

        def work(uow):
            user = uow.users.add(email=email, display_name=f"Test {role}", role=role,
                                 password_hash=passwords.hash(password))
            token, digest = new_token()
            uow.tokens.add(user_id=user.id, token_hash=digest, max_age_seconds=3600, client_addr=None)
            return Staff(user.id, role, email, token, password)

        return db.run(work)

    return make


@pytest.fixture
def admin(make_staff):
    return make_staff("admin")


@pytest.fixture
def provider(make_staff):
    return make_staff("provider")


def patient_body(**overrides) -> dict:
    body = {
        "first_name": "Ada", "last_name": "Lovelace", "date_of_birth": "1985-12-10",
        "sex": "female", "mrn": f"MRN-{uuid.uuid4().hex[:10]}", "email": "ada@example.org",
        "phone": "+44 20 7946 0000",
        "address": {"line1": "12 St James's Square", "city": "London", "country": "GB"},
        "insurance": {"payer": "NHS", "member_id": "943 476 5919"},
        "emergency_contact": {"name": "Charles Babbage", "relationship": "friend", "phone": "+44 20 7946 0001"},
        "notes": "Prefers morning appointments.",
    }
    body.update(overrides)
    return body


@pytest.fixture
def create_patient(client):
    """POST a patient as ``staff`` and return the response JSON (asserting 201)."""
    def create(staff, **overrides):
        response = client.post("/api/v1/patients", json=patient_body(**overrides), headers=staff.headers)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return create


def statements_run(monkeypatch) -> list[str]:
    """The names (``/* clarity:<name> */``) of the statements run from now on, in order."""
    executed, original = [], psycopg.Cursor.execute

    def recording(self, query, *args, **kwargs):
        text = str(query)
        executed.append(text.split("*/")[0].replace("/* clarity:", "").strip() if "clarity:" in text else text[:30])
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", recording)
    return executed
