"""The schema's migrations: they apply, roll back and apply again with yoyo (Python API, the
yoyo command line and ``flask db upgrade``), and the audit trail they create is append-only."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pg
from psycopg import sql
from yoyo import get_backend, read_migrations

from clarity.schema import yoyo_url
from clarity.db import MIGRATIONS_DIR
from tests.conftest import APP_ROLE

ROOT = MIGRATIONS_DIR.parent
BIN = Path(sys.executable).parent
TABLES = {"users", "auth_tokens", "patients", "audit_events", "audit_seals", "emergency_access_grants",
          "appointments", "medical_records", "digital_twin_versions", "biometric_readings", "alert_rules", "alerts"}


@pytest.fixture
def empty_database(server):
    """A brand new database with no schema at all (not cloned from the migrated template)."""
    name = f"t_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        server.drop_database(name)


@pytest.fixture(scope="module")
def migrated_database(server):
    """A database cloned from the migrated template, for tests that commit."""
    name = server.create_database()
    try:
        yield name
    finally:
        server.drop_database(name)


@contextlib.contextmanager
def yoyo_backend(url):
    backend = get_backend(yoyo_url(url))
    try:
        yield backend
    finally:
        backend.connection.close()


def tables(url) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {row[0] for row in rows}


def insert_audit_event(conn) -> int:
    return conn.execute(
        "INSERT INTO audit_events (action, event_type, outcome) VALUES ('R', 'test.event', 'success') "
        "RETURNING id").fetchone()[0]


def test_migrations_apply_roll_back_and_apply_again(server, empty_database):
    url = server.url(empty_database)
    migrations = read_migrations(str(MIGRATIONS_DIR))
    assert len(migrations) >= 4

    with yoyo_backend(url) as backend:
        with backend.lock():
            backend.apply_migrations(backend.to_apply(migrations))
        assert not backend.to_apply(migrations)
    assert TABLES <= tables(url)

    with yoyo_backend(url) as backend:
        with backend.lock():
            backend.rollback_migrations(backend.to_rollback(migrations))
        assert len(backend.to_apply(migrations)) == len(migrations)
    assert not TABLES & tables(url)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1 FROM pg_proc WHERE proname = 'clarity_touch_updated_at'").fetchone() is None
        # clarity_app is cluster-wide and the other databases of this cluster still use it.
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'clarity_app'").fetchone()

    with yoyo_backend(url) as backend:
        with backend.lock():
            backend.apply_migrations(backend.to_apply(migrations))
        assert not backend.to_apply(migrations)
    assert TABLES <= tables(url)


def _env(**values) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARITY_") and k != "DATABASE_URL"}
    env.update(values)
    return env


def test_yoyo_cli_applies_migrations_from_a_shell(server, empty_database):
    port = server.pg.settings["port"]
    result = subprocess.run(
        [str(BIN / "yoyo"), "apply", "--batch",
         "--database", f"postgresql+psycopg://postgres@127.0.0.1:{port}/{empty_database}", "migrations"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert TABLES <= tables(server.url(empty_database))


def test_flask_db_upgrade_applies_migrations(server, empty_database):
    env = _env(DATABASE_URL=server.url(empty_database, APP_ROLE),
               CLARITY_MIGRATION_DATABASE_URL=server.url(empty_database),
               CLARITY_ARGON2_TIME_COST="1", CLARITY_ARGON2_MEMORY_KIB="1024")

    def flask(*args):
        return subprocess.run([str(BIN / "flask"), "--app", "wsgi", "db", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    before = flask("status")
    assert before.returncode == 1, before.stderr
    assert "PENDING" in before.stdout

    upgrade = flask("upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert TABLES <= tables(server.url(empty_database))

    after = flask("status")
    assert after.returncode == 0, after.stdout + after.stderr
    assert "PENDING" not in after.stdout


def test_app_role_cannot_update_or_delete_audit_events(server, migrated_database):
    with psycopg.connect(server.url(migrated_database, APP_ROLE), autocommit=True) as conn:
        event_id = insert_audit_event(conn)
        assert conn.execute("SELECT event_type FROM audit_events WHERE id = %s", (event_id,)).fetchone() == (
            "test.event",)
        with pytest.raises(pg.InsufficientPrivilege):
            conn.execute("UPDATE audit_events SET outcome = 'failure' WHERE id = %s", (event_id,))
        with pytest.raises(pg.InsufficientPrivilege):
            conn.execute("DELETE FROM audit_events WHERE id = %s", (event_id,))
        with pytest.raises(pg.InsufficientPrivilege):
            conn.execute("TRUNCATE audit_events")
        assert conn.execute("SELECT outcome FROM audit_events WHERE id = %s", (event_id,)).fetchone() == (
            "success",)


def test_audit_events_refuse_update_delete_and_truncate_even_for_the_owner(server, migrated_database):
    with psycopg.connect(server.url(migrated_database, "postgres"), autocommit=True) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
        event_id = insert_audit_event(conn)
        for statement in ("UPDATE audit_events SET outcome = 'failure' WHERE id = %(id)s",
                          "DELETE FROM audit_events WHERE id = %(id)s",
                          "TRUNCATE audit_events"):
            with pytest.raises(pg.InsufficientPrivilege) as refused:
                conn.execute(statement, {"id": event_id})
            assert refused.value.sqlstate == "42501"
            assert "append-only" in str(refused.value), statement
        assert conn.execute("SELECT outcome FROM audit_events WHERE id = %s", (event_id,)).fetchone() == (
            "success",)
