"""Row-level security: even a deliberately unscoped query sees only what the actor may see."""
import uuid

import psycopg
import pytest

from clarity.security.access import Actor
from tests.conftest import patient_body


def act_as(conn, actor_id, role):
    conn.execute("SELECT set_config('clarity.actor_id', %s, true), set_config('clarity.actor_role', %s, true)",
                 (str(actor_id) if actor_id else "", role or ""))


def visible_ids(conn) -> set:
    return {row[0] for row in conn.execute("SELECT id FROM patients")}


@pytest.fixture
def two_practices(db, make_staff):
    """Two providers with two patients each, created through the repository."""
    providers = [make_staff("provider"), make_staff("provider")]
    patients = {}
    for staff in providers:
        actor = Actor(id=staff.id, role="provider")
        phi = patient_body()
        patients[staff.id] = {
            db.run(lambda uow: uow.patients.add(provider_id=staff.id, status="active", phi={**phi, "mrn": uuid.uuid4().hex}),
                   actor=actor).id
            for _ in range(2)}
    return providers, patients


def test_an_unscoped_select_in_a_providers_transaction_returns_only_their_patients(conn, two_practices):
    (a, b), patients = two_practices
    act_as(conn, a.id, "provider")
    assert visible_ids(conn) == patients[a.id]
    act_as(conn, b.id, "provider")
    assert visible_ids(conn) == patients[b.id]


def test_an_admins_transaction_sees_every_patient(conn, two_practices, admin):
    _, patients = two_practices
    act_as(conn, admin.id, "admin")
    assert visible_ids(conn) >= set().union(*patients.values())


def test_an_auditors_transaction_sees_no_patient(conn, two_practices, make_staff):
    auditor = make_staff("auditor")
    act_as(conn, auditor.id, "auditor")
    assert visible_ids(conn) == set()


def test_a_transaction_without_actor_context_sees_nothing(conn, two_practices):
    act_as(conn, None, None)
    assert visible_ids(conn) == set()
    assert conn.execute("SELECT count(*) FROM patients").fetchone()[0] == 0


def test_a_provider_cannot_update_or_delete_another_providers_rows_even_unscoped(conn, two_practices):
    (a, b), patients = two_practices
    act_as(conn, a.id, "provider")
    assert conn.execute("UPDATE patients SET status = 'inactive' WHERE provider_id = %s", (b.id,)).rowcount == 0


def test_a_provider_cannot_hand_a_patient_to_another_provider(conn, two_practices):
    (a, b), patients = two_practices
    act_as(conn, a.id, "provider")
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        conn.execute("UPDATE patients SET provider_id = %s WHERE provider_id = %s", (b.id, a.id))


def test_the_app_role_cannot_switch_row_level_security_off(conn):
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        conn.execute("ALTER TABLE patients DISABLE ROW LEVEL SECURITY")
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        conn.execute("SET LOCAL row_security = off; SELECT id FROM patients")
