"""Row-level security: even a deliberately unscoped query sees only what the actor may see."""
import datetime as dt
import uuid

import psycopg
import pytest

from clarity.repositories.biometrics import Reading
from clarity.security.access import Actor
from clarity.services.biometrics import KINDS
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


# The audit trail names patients by id only, never their data (design §5), and is what auditors
# read: a policy keyed on the patient's visibility would hide it from them.
NOT_PATIENT_DATA = {"audit_events"}
EXPECTED_PATIENT_TABLES = {"patients", "emergency_access_grants", "biometric_readings", "biometric_patients",
                           "alert_rules", "alerts", "appointments", "medical_records", "digital_twin_versions"}

PATIENT_TABLES = """
SELECT c.relname, parent.relname AS parent,
       c.relrowsecurity AND c.relforcerowsecurity AS rls_forced,
       has_table_privilege('clarity_app', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
       OR has_any_column_privilege('clarity_app', c.oid, 'SELECT, INSERT, UPDATE, REFERENCES') AS app_privileged
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND c.relispartition
  LEFT JOIN pg_class parent ON parent.oid = i.inhparent
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND c.relkind IN ('r', 'p', 'f', 'm')
   AND (c.oid = 'patients'::regclass
        OR EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attname = 'patient_id' AND NOT a.attisdropped)
        OR EXISTS (SELECT 1 FROM pg_constraint k
                    WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.confrelid = 'patients'::regclass))
"""


def test_every_table_holding_patient_data_has_row_level_security_enabled_and_forced(conn):
    tables = {row[0]: row[1:] for row in conn.execute(PATIENT_TABLES)}

    def covered(name):
        parent, rls_forced, app_privileged = tables[name]
        # A partition the app role cannot reach directly is read only through its parent's policies.
        return rls_forced or (parent is not None and not app_privileged and covered(parent))

    top_level = {name for name, (parent, _, _) in tables.items() if parent is None}
    assert EXPECTED_PATIENT_TABLES | NOT_PATIENT_DATA <= top_level
    assert any(tables[name][0] == "biometric_readings" for name in tables), "the readings' partitions are enumerated"
    assert sorted(name for name in tables if name not in NOT_PATIENT_DATA and not covered(name)) == []


def test_biometric_reads_find_nothing_of_another_providers_patient_and_writes_are_refused(conn, db, two_practices):
    """The per-kind reads of sql/biometrics.sql, run unscoped (no get_patient_access first)."""
    (a, b), patients = two_practices
    theirs = sorted(patients[b.id])[0]
    at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    db.run(lambda uow: uow.biometrics.add_many(theirs, [Reading("heart_rate", 70.0, "bpm", at, "w"),
                                                        Reading("spo2", 97.0, "%", at, "w")]),
           actor=Actor(id=b.id, role="provider"))
    window = {"recorded_from": at - dt.timedelta(days=1), "recorded_to": at + dt.timedelta(days=1)}

    def reads():
        q = db.queries.biometrics
        return (q.list_biometric_readings.all(conn, {
                    "patient_id": theirs, "kinds": list(KINDS), "recorded_from": None, "recorded_to": None,
                    "after_recorded_at": None, "after_kind": None, "after_source_device": None, "limit": 10}),
                q.list_biometric_summary.all(conn, {"patient_id": theirs, "kinds": list(KINDS), "bucket": "day",
                                                    **window}),
                q.list_biometric_latest.all(conn, {"patient_id": theirs, "kinds": list(KINDS)}))

    act_as(conn, b.id, "provider")
    assert [len(rows) for rows in reads()] == [2, 2, 2]
    act_as(conn, a.id, "provider")
    assert reads() == ([], [], [])
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        conn.execute("INSERT INTO biometric_readings (patient_id, recorded_at, value, kind, unit, source_device) "
                     "VALUES (%s, %s, 70, 'heart_rate', 'bpm', 'sneaky')", (theirs, at))


def test_biometric_patients_take_only_a_patient_the_actor_sees_and_the_app_never_reads_or_removes_them(
        conn, two_practices):
    (a, b), patients = two_practices
    mine, theirs = sorted(patients[a.id])[0], sorted(patients[b.id])[0]
    act_as(conn, a.id, "provider")
    with conn.transaction():
        conn.execute("INSERT INTO biometric_patients (patient_id) VALUES (%s)", (mine,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        conn.execute("INSERT INTO biometric_patients (patient_id) VALUES (%s)", (theirs,))
    for statement in ("SELECT patient_id FROM biometric_patients", "DELETE FROM biometric_patients",
                      "UPDATE biometric_patients SET patient_id = patient_id", "TRUNCATE biometric_patients"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(statement)


@pytest.fixture
def grants(db, make_staff):
    """Two providers, each holding an emergency grant to another provider's patient."""
    owner, *providers = make_staff("provider"), make_staff("provider"), make_staff("provider")
    patient_id = db.run(lambda uow: uow.patients.add(provider_id=owner.id, status="active",
                                                     phi={**patient_body(), "mrn": uuid.uuid4().hex}),
                        actor=Actor(id=owner.id, role="provider")).id
    held = {}
    for staff in providers:
        grant = db.run(lambda uow: uow.emergency_access.add(patient_id=patient_id, provider_id=staff.id,
                                                            reason="Unconscious, allergies unknown", minutes=5),
                       actor=Actor(id=staff.id, role="provider"))
        held[staff.id] = {grant.id}
    return providers, patient_id, held


def visible_grant_ids(conn) -> set:
    return {row[0] for row in conn.execute("SELECT id FROM emergency_access_grants")}


def test_an_unscoped_select_of_grants_in_a_providers_transaction_returns_only_their_own(conn, grants):
    (a, b), _, held = grants
    act_as(conn, a.id, "provider")
    assert visible_grant_ids(conn) == held[a.id]
    act_as(conn, b.id, "provider")
    assert visible_grant_ids(conn) == held[b.id]


def test_an_admins_transaction_sees_every_grant(conn, grants, admin):
    _, _, held = grants
    act_as(conn, admin.id, "admin")
    assert visible_grant_ids(conn) >= set().union(*held.values())


@pytest.mark.parametrize("role", ["auditor", None])
def test_auditors_and_transactions_without_actor_context_see_no_grant(conn, grants, make_staff, role):
    act_as(conn, make_staff(role).id if role else None, role)
    assert visible_grant_ids(conn) == set()
    assert conn.execute("SELECT count(*) FROM emergency_access_grants").fetchone()[0] == 0


def test_the_emergency_grant_check_sees_the_providers_own_grants_under_row_level_security(conn, grants):
    (a, b), patient_id, _ = grants
    act_as(conn, a.id, "provider")
    assert conn.execute("SELECT clarity_holds_emergency_grant(%s, %s)", (patient_id, a.id)).fetchone()[0] is True
    assert conn.execute("SELECT count(*) FROM patients WHERE id = %s", (patient_id,)).fetchone()[0] == 1
    # Another provider's grant is not the actor's to ask about.
    assert conn.execute("SELECT clarity_holds_emergency_grant(%s, %s)", (patient_id, b.id)).fetchone()[0] is False


def test_a_provider_cannot_record_a_grant_in_another_providers_name(conn, grants):
    (a, b), patient_id, _ = grants
    act_as(conn, a.id, "provider")
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        conn.execute("INSERT INTO emergency_access_grants (patient_id, provider_id, reason, reason_key_id, expires_at)"
                     " VALUES (%s, %s, '\\x00', 'test1', now() + interval '1 hour')", (patient_id, b.id))


def test_a_provider_cannot_change_a_grant_even_their_own(conn, grants):
    (a, _), _, _ = grants
    act_as(conn, a.id, "provider")
    assert conn.execute("UPDATE emergency_access_grants SET reason_key_id = 'forged'").rowcount == 0
