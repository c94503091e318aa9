"""The unit of work: one transaction for the work and its audit events, savepoints when nested,
after-commit hooks, the actor context, and retries of serialization failures.

Tests that need real commits run on a database cloned from the migrated template, through the
app's real pool, as the app role; the others use the rolled-back ``db`` fixture.
"""
from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import errors as pg

from clarity import create_app
from clarity.audit import AuditEvent
from clarity.errors import Conflict, Invalid, NotFound, Unavailable
from clarity.security.access import Actor
from tests.conftest import APP_ROLE, make_settings

PASSWORD_HASH = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


@pytest.fixture(scope="module")
def fresh(server, keyring):
    """(Database, url) on a cloned database whose units of work really commit."""
    name = server.create_database()
    app = create_app(make_settings(server, name), keyring=keyring)
    database = app.extensions["clarity"].db
    yield database, server.url(name, APP_ROLE)
    database.close()
    server.drop_database(name)


@pytest.fixture
def real_db(fresh):
    return fresh[0]


@pytest.fixture
def observer(fresh):
    """Another session on the cloned database: it sees only committed data."""
    with psycopg.connect(fresh[1], autocommit=True) as conn:
        yield conn


def add_user(uow, email=None, display_name="Unit Of Work"):
    return uow.users.add(email=email or f"uow-{uuid.uuid4().hex[:10]}@clarity.test",
                         display_name=display_name, role="provider", password_hash=PASSWORD_HASH)


def user_exists(conn, email) -> bool:
    return conn.execute("SELECT count(*) FROM users WHERE email = %s", (email,)).fetchone()[0] == 1


def audit_outcomes(conn, request_id) -> list[str]:
    return [row[0] for row in conn.execute(
        "SELECT outcome FROM audit_events WHERE request_id = %s ORDER BY id", (request_id,))]


def marker() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"uow-{tag}@clarity.test", f"req-{tag}"


def test_a_unit_of_work_commits_its_work_and_its_audit_events_in_one_transaction(real_db, observer):
    email, request_id = marker()

    def work(uow):
        user = add_user(uow, email)
        uow.audit(AuditEvent("C", "user.create", "user", user.id))
        return user

    user = real_db.run(work, request_id=request_id, client_addr="192.0.2.9")

    assert user_exists(observer, email)
    assert audit_outcomes(observer, request_id) == ["success"]
    user_xmin = observer.execute("SELECT xmin::text FROM users WHERE id = %s", (user.id,)).fetchone()[0]
    audit_xmin, entity_id, addr = observer.execute(
        "SELECT xmin::text, entity_id, host(client_addr) FROM audit_events WHERE request_id = %s",
        (request_id,)).fetchone()
    assert audit_xmin == user_xmin, "the audit event was not written in the work's transaction"
    assert (entity_id, addr) == (str(user.id), "192.0.2.9")


def test_a_unit_of_work_leaves_its_connection_idle_after_commit(real_db):
    with real_db.connection() as conn:
        with real_db.unit_of_work(conn) as uow:
            add_user(uow)
            assert conn.execute("SELECT pg_current_xact_id_if_assigned()").fetchone()[0] is not None
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_an_unexpected_exception_rolls_back_the_work_and_its_audit_events(real_db, observer):
    email, request_id = marker()

    def work(uow):
        add_user(uow, email)
        uow.audit(AuditEvent("C", "user.create", "user"))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        real_db.run(work, request_id=request_id)

    assert not user_exists(observer, email)
    assert audit_outcomes(observer, request_id) == []


def test_a_domain_error_rolls_back_the_work_but_keeps_its_audit_events_as_denied(real_db, observer):
    email, request_id = marker()

    def work(uow):
        add_user(uow, email)
        uow.audit(AuditEvent("R", "patient.read", "patient", uuid.uuid4()))
        raise NotFound("No such patient.")

    with pytest.raises(NotFound):
        real_db.run(work, request_id=request_id)

    assert not user_exists(observer, email)
    assert audit_outcomes(observer, request_id) == ["denied"]


def test_a_domain_error_records_its_own_outcome(real_db, observer):
    _, request_id = marker()

    def work(uow):
        uow.audit(AuditEvent("C", "patient.create", "patient"))
        raise Invalid("bad")

    with pytest.raises(Invalid):
        real_db.run(work, request_id=request_id)

    assert audit_outcomes(observer, request_id) == ["failure"]


def test_a_driver_error_is_translated_and_rolls_back_everything(real_db, observer):
    email, request_id = marker()

    def work(uow):
        add_user(uow, email)
        uow.audit(AuditEvent("C", "user.create", "user"))
        add_user(uow, email.upper())  # same email, other case: unique violation

    with pytest.raises(Conflict) as raised:
        real_db.run(work, request_id=request_id)

    assert raised.value.field == "email"
    assert isinstance(raised.value.__cause__, pg.UniqueViolation)
    assert not user_exists(observer, email)


def test_a_nested_unit_is_a_savepoint_whose_failure_the_outer_unit_survives(real_db, observer):
    outer_email, request_id = marker()
    inner_email, _ = marker()

    with real_db.connection() as conn:
        with real_db.unit_of_work(conn, request_id=request_id) as outer:
            add_user(outer, outer_email)
            with pytest.raises(RuntimeError):
                with real_db.unit_of_work(conn, request_id=request_id) as inner:
                    add_user(inner, inner_email)
                    inner.audit(AuditEvent("C", "user.create", "user"))
                    raise RuntimeError("inner failure")
            assert user_exists(conn, outer_email) and not user_exists(conn, inner_email)
            assert not user_exists(observer, outer_email), "a nested unit must not commit the outer work"

    assert user_exists(observer, outer_email)
    assert not user_exists(observer, inner_email)
    assert audit_outcomes(observer, request_id) == []


def test_a_nested_unit_that_succeeds_commits_only_with_the_outer_unit(real_db, observer):
    inner_email, request_id = marker()

    with real_db.connection() as conn:
        with pytest.raises(RuntimeError):
            with real_db.unit_of_work(conn, request_id=request_id):
                with real_db.unit_of_work(conn, request_id=request_id) as inner:
                    add_user(inner, inner_email)
                    inner.audit(AuditEvent("C", "user.create", "user"))
                raise RuntimeError("outer failure")

    assert not user_exists(observer, inner_email)
    assert audit_outcomes(observer, request_id) == []


def test_after_commit_hooks_run_after_the_commit_is_visible_to_others(real_db, observer):
    email, _ = marker()
    seen = []

    def work(uow):
        add_user(uow, email)
        uow.after_commit(lambda: seen.append(user_exists(observer, email)))
        assert seen == []
        return "done"

    assert real_db.run(work) == "done"
    assert seen == [True]


def test_after_commit_hooks_do_not_run_when_the_unit_rolls_back(real_db):
    ran = []

    def work(uow):
        uow.after_commit(lambda: ran.append("hook"))
        raise NotFound()

    with pytest.raises(NotFound):
        real_db.run(work)

    assert ran == []


def test_after_commit_hooks_of_a_nested_unit_wait_for_the_outer_commit(real_db):
    ran = []

    with real_db.connection() as conn:
        with pytest.raises(RuntimeError):
            with real_db.unit_of_work(conn):
                with real_db.unit_of_work(conn) as inner:
                    inner.after_commit(lambda: ran.append("hook"))
                raise RuntimeError("the outer unit rolls back: nothing was committed")

    assert ran == [], "an after-commit hook ran although nothing was committed"


def test_set_actor_is_visible_to_postgresql_for_the_transaction_only(real_db):
    actor = Actor(id=uuid.uuid4(), role="provider")
    context = "SELECT current_setting('clarity.actor_id', true), current_setting('clarity.actor_role', true)," \
              "       current_setting('clarity.request_id', true)"

    with real_db.connection() as conn:
        with real_db.unit_of_work(conn, request_id="req-actor") as uow:
            uow.set_actor(actor)
            assert uow.actor == actor
            assert conn.execute(context).fetchone() == (str(actor.id), "provider", "req-actor")
        after = conn.execute(context).fetchone()

    assert after in ((None, None, None), ("", "", ""))


def test_set_actor_inside_the_test_transaction(db):
    actor = Actor(id=uuid.uuid4(), role="admin")

    def work(uow):
        uow.set_actor(actor)
        return uow.conn.execute("SELECT current_setting('clarity.actor_id', true)").fetchone()[0]

    assert db.run(work) == str(actor.id)


def test_buffered_events_are_stamped_with_the_actor_set_on_the_unit(real_db, observer):
    _, request_id = marker()
    actor = Actor(id=uuid.uuid4(), role="auditor")

    def work(uow):
        uow.set_actor(actor)
        uow.audit(AuditEvent("R", "audit.search"))

    real_db.run(work, request_id=request_id)

    assert observer.execute("SELECT actor_id, actor_role FROM audit_events WHERE request_id = %s",
                            (request_id,)).fetchone() == (actor.id, "auditor")


def test_a_serialization_failure_re_runs_the_whole_work_and_returns_its_result(real_db, observer):
    email, request_id = marker()
    user_id = real_db.run(lambda uow: add_user(uow, email, display_name="v0")).id
    attempts = []

    def work(uow):
        attempts.append(1)
        uow.conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        uow.audit(AuditEvent("U", "user.update", "user", user_id))
        current = uow.users.get(user_id)  # takes the snapshot
        if len(attempts) == 1:
            observer.execute("UPDATE users SET display_name = 'concurrent' WHERE id = %s", (user_id,))
        return uow.users.update(user_id, current.version, display_name=f"attempt {len(attempts)}")

    updated = real_db.run(work, request_id=request_id)

    assert len(attempts) == 2
    assert (updated.display_name, updated.version) == ("attempt 2", 2)
    assert observer.execute("SELECT display_name FROM users WHERE id = %s", (user_id,)).fetchone()[0] == "attempt 2"
    assert audit_outcomes(observer, request_id) == ["success"]


def test_serialization_failures_stop_after_a_bounded_number_of_attempts(real_db, observer):
    email, _ = marker()
    user_id = real_db.run(lambda uow: add_user(uow, email)).id
    attempts = []

    def work(uow):
        attempts.append(1)
        uow.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        uow.users.get(user_id)
        observer.execute("UPDATE users SET display_name = %s WHERE id = %s", (f"concurrent {len(attempts)}", user_id))
        uow.users.update(user_id, 1, display_name="never")

    with pytest.raises(Unavailable) as raised:
        real_db.run(work)

    assert isinstance(raised.value.__cause__, pg.SerializationFailure)
    assert 1 < len(attempts) <= 10
    assert observer.execute("SELECT display_name FROM users WHERE id = %s",
                            (user_id,)).fetchone()[0] == f"concurrent {len(attempts)}"


def test_a_serialization_failure_inside_an_outer_transaction_is_not_retried(db):
    attempts = []

    def work(uow):
        attempts.append(1)
        raise pg.SerializationFailure("could not serialize access")

    with pytest.raises(Unavailable):
        db.run(work)

    assert len(attempts) == 1


def test_a_failing_audit_insert_fails_the_whole_unit_and_leaves_the_connection_usable(real_db, observer):
    email, request_id = marker()

    def work(uow):
        add_user(uow, email)
        uow.audit(AuditEvent("X", "user.create", "user"))  # refused by audit_events_action_check
        return "returned"

    with pytest.raises(Unavailable):
        real_db.run(work, request_id=request_id)
    assert not user_exists(observer, email), "no audit row, no change"
    assert audit_outcomes(observer, request_id) == []
    with real_db.connection() as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert real_db.run(lambda uow: add_user(uow).email)


def test_a_retried_patient_update_sees_the_callers_changes_unchanged(db, make_staff):
    """update_patient may run twice (Database.run retries serialization failures): it must not
    consume the caller's dict, or the retry would silently drop the status change."""
    from clarity.security.access import Actor
    from clarity.services import patients
    from tests.conftest import patient_body

    staff = make_staff("provider")
    actor = Actor(id=staff.id, role="provider")
    created = db.run(lambda uow: patients.create_patient(uow, actor, phi=patient_body()), actor=actor)
    changes = {"status": "inactive", "phone": "+44 1"}
    updated = db.run(lambda uow: patients.update_patient(uow, actor, created.id, created.version, changes), actor=actor)
    assert changes == {"status": "inactive", "phone": "+44 1"}
    assert (updated.status, updated.phi["phone"]) == ("inactive", "+44 1")
