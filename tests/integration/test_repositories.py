"""Repositories on the real, migrated database, as the app role, inside a rolled-back transaction."""
from __future__ import annotations

import datetime as dt
import ipaddress
import uuid

import pytest

from clarity.audit import AuditEvent
from clarity.errors import Conflict, DecryptionError, Invalid
from clarity.security.access import Actor, new_token

PASSWORD_HASH = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


def phi(**overrides) -> dict:
    fields = {
        "first_name": "Ada", "last_name": "Lovelace", "date_of_birth": "1985-12-10",
        "mrn": f"MRN-{uuid.uuid4().hex[:10]}", "email": "ada@example.org",
        "phone": "+44 20 7946 0000", "notes": "Prefers morning appointments.",
    }
    fields.update(overrides)
    return fields


def add_user(db, role="provider", email=None, display_name="Test User"):
    email = email or f"{role}-{uuid.uuid4().hex[:8]}@clarity.test"
    return db.run(lambda uow: uow.users.add(email=email, display_name=display_name, role=role,
                                            password_hash=PASSWORD_HASH))


def actor_for(user) -> Actor:
    return Actor(id=user.id, role=user.role)


@pytest.fixture
def provider(db):
    return actor_for(add_user(db, "provider"))


@pytest.fixture
def other_provider(db):
    return actor_for(add_user(db, "provider"))


@pytest.fixture
def admin(db):
    return actor_for(add_user(db, "admin"))


def run_as(db, actor: Actor, work):
    """Run ``work`` in a unit of work acting as ``actor``: row-level security reads the actor."""
    return db.run(work, actor=actor)


def see_all(conn):
    """Let this test transaction's raw SQL see every patient (an admin's context)."""
    conn.execute("SELECT set_config('clarity.actor_role', 'admin', true)")


def add_patient(db, owner: Actor, status="active", **fields):
    return run_as(db, owner, lambda uow: uow.patients.add(provider_id=owner.id, status=status, phi=phi(**fields)))


# --- users -----------------------------------------------------------------------------------

def test_an_added_user_can_be_read_back_by_id(db):
    user = add_user(db, "admin", email="Grace.Hopper@Clarity.test", display_name="Grace Hopper")

    assert (user.email, user.display_name, user.role, user.version) == (
        "Grace.Hopper@Clarity.test", "Grace Hopper", "admin", 1)
    assert user.disabled is False
    assert db.run(lambda uow: uow.users.get(user.id)) == user


def test_an_unknown_user_id_reads_as_none(db):
    assert db.run(lambda uow: uow.users.get(uuid.uuid4())) is None


def test_credentials_are_found_by_email_case_insensitively(db):
    user = add_user(db, "provider", email="Grace.Hopper@Clarity.test")

    credentials = db.run(lambda uow: uow.users.get_credentials("grace.hopper@CLARITY.TEST"))

    assert (credentials.id, credentials.role, credentials.password_hash, credentials.disabled_at) == (
        user.id, "provider", PASSWORD_HASH, None)


def test_credentials_for_an_unknown_email_are_none(db):
    assert db.run(lambda uow: uow.users.get_credentials("nobody@clarity.test")) is None


def test_a_second_user_with_the_same_email_in_another_case_is_a_conflict_on_email(db):
    add_user(db, email="grace@clarity.test")

    with pytest.raises(Conflict) as raised:
        add_user(db, email="GRACE@clarity.test")

    assert raised.value.field == "email"
    assert "grace" not in raised.value.detail.lower()


def test_users_are_listed_in_keyset_pages_without_gaps_or_repeats(db):
    mine = {add_user(db).id for _ in range(5)}

    seen, after = [], None
    while True:
        page = db.run(lambda uow: uow.users.list(after=after, limit=2))
        if not page:
            break
        assert len(page) <= 2
        seen.extend(page)
        after = (page[-1].created_at, page[-1].id)

    keys = [(u.created_at, u.id) for u in seen]
    assert keys == sorted(keys)
    assert len(keys) == len(set(keys))
    assert mine <= {u.id for u in seen}


def test_a_user_update_applies_only_the_given_changes_and_bumps_the_version(db):
    user = add_user(db, "provider", display_name="Before")

    updated = db.run(lambda uow: uow.users.update(user.id, user.version, display_name="After"))

    assert (updated.display_name, updated.role, updated.version) == ("After", "provider", 2)
    assert updated.email == user.email
    assert db.run(lambda uow: uow.users.get_credentials(user.email)).password_hash == PASSWORD_HASH


def test_a_user_update_with_a_stale_version_changes_nothing_and_returns_none(db):
    user = add_user(db, "provider", display_name="Before")
    db.run(lambda uow: uow.users.update(user.id, user.version, display_name="First writer"))

    stale = db.run(lambda uow: uow.users.update(user.id, user.version, display_name="Second writer"))

    assert stale is None
    assert db.run(lambda uow: uow.users.get(user.id)).display_name == "First writer"


def test_a_user_update_of_an_unknown_user_returns_none(db):
    assert db.run(lambda uow: uow.users.update(uuid.uuid4(), 1, display_name="x")) is None


def test_disabling_and_re_enabling_a_user(db):
    user = add_user(db)

    disabled = db.run(lambda uow: uow.users.update(user.id, 1, disabled=True))
    enabled = db.run(lambda uow: uow.users.update(user.id, 2, disabled=False))

    assert disabled.disabled and disabled.disabled_at is not None
    assert not enabled.disabled and enabled.version == 3


def test_a_password_change_stores_the_new_hash(db):
    user = add_user(db)

    db.run(lambda uow: uow.users.update(user.id, 1, password_hash="$argon2id$new"))
    assert db.run(lambda uow: uow.users.get_credentials(user.email)).password_hash == "$argon2id$new"

    db.run(lambda uow: uow.users.set_password_hash(user.id, "$argon2id$rehashed"))
    assert db.run(lambda uow: uow.users.get_credentials(user.email)).password_hash == "$argon2id$rehashed"


# --- tokens ----------------------------------------------------------------------------------

def add_token(db, user_id, max_age_seconds=3600, client_addr="192.0.2.7"):
    _, digest = new_token()
    row = db.run(lambda uow: uow.tokens.add(user_id=user_id, token_hash=digest,
                                            max_age_seconds=max_age_seconds, client_addr=client_addr))
    return row, digest


def get_actor(db, digest, idle_seconds=900, request_id="req-1"):
    return db.run(lambda uow: uow.tokens.get_actor(digest, idle_seconds=idle_seconds, request_id=request_id))


def test_a_token_expires_after_its_maximum_age(db, provider):
    row, _ = add_token(db, provider.id, max_age_seconds=3600)

    assert row["expires_at"] - row["created_at"] == dt.timedelta(hours=1)
    assert isinstance(row["id"], uuid.UUID)


def test_a_live_token_authenticates_its_user_and_sets_the_actor_context(db, provider):
    row, digest = add_token(db, provider.id)

    def work(uow):
        found = uow.tokens.get_actor(digest, idle_seconds=900, request_id="req-42")
        context = uow.conn.execute(
            "SELECT current_setting('clarity.actor_id', true), current_setting('clarity.actor_role', true),"
            "       current_setting('clarity.request_id', true)").fetchone()
        return found, context

    found, context = db.run(work)

    assert (found["token_id"], found["user_id"], found["role"]) == (row["id"], provider.id, "provider")
    assert context == (str(provider.id), "provider", "req-42")


def test_the_stored_token_is_only_its_digest(db, conn, provider):
    token, digest = new_token()
    db.run(lambda uow: uow.tokens.add(user_id=provider.id, token_hash=digest, max_age_seconds=60, client_addr=None))

    stored = conn.execute("SELECT token_hash FROM auth_tokens WHERE user_id = %s", (provider.id,)).fetchone()[0]

    assert stored == digest and token.encode() not in stored


def test_an_unknown_token_authenticates_nobody(db):
    assert get_actor(db, new_token()[1]) is None


def test_an_expired_token_authenticates_nobody(db, provider):
    _, digest = add_token(db, provider.id, max_age_seconds=0)

    assert get_actor(db, digest) is None


def test_an_idle_token_authenticates_nobody(db, conn, provider):
    _, digest = add_token(db, provider.id)
    conn.execute("UPDATE auth_tokens SET last_used_at = now() - interval '16 minutes' WHERE token_hash = %s",
                 (digest,))

    assert get_actor(db, digest, idle_seconds=900) is None
    assert get_actor(db, digest, idle_seconds=3600) is not None


def test_using_a_token_refreshes_its_idle_clock(db, conn, provider):
    _, digest = add_token(db, provider.id)
    conn.execute("UPDATE auth_tokens SET last_used_at = now() - interval '10 minutes' WHERE token_hash = %s",
                 (digest,))

    assert get_actor(db, digest) is not None

    idle = conn.execute("SELECT now() - last_used_at FROM auth_tokens WHERE token_hash = %s", (digest,)).fetchone()[0]
    assert idle < dt.timedelta(seconds=1)


def test_a_disabled_users_token_authenticates_nobody(db, provider):
    _, digest = add_token(db, provider.id)
    db.run(lambda uow: uow.users.update(provider.id, 1, disabled=True))

    assert get_actor(db, digest) is None


def test_a_revoked_token_authenticates_nobody_and_revokes_only_once(db, provider):
    row, digest = add_token(db, provider.id)

    assert db.run(lambda uow: uow.tokens.revoke(row["id"])) is True
    assert get_actor(db, digest) is None
    assert db.run(lambda uow: uow.tokens.revoke(row["id"])) is False


def test_revoking_all_of_a_users_tokens_leaves_other_users_tokens_alive(db, provider, other_provider):
    _, first = add_token(db, provider.id)
    _, second = add_token(db, provider.id)
    _, others = add_token(db, other_provider.id)

    assert db.run(lambda uow: uow.tokens.revoke_all_for_user(provider.id)) == 2

    assert get_actor(db, first) is None and get_actor(db, second) is None
    assert get_actor(db, others)["user_id"] == other_provider.id
    assert db.run(lambda uow: uow.tokens.revoke_all_for_user(provider.id)) == 0


# --- patients --------------------------------------------------------------------------------

def test_an_added_patient_reads_back_decrypted_for_its_provider(db, provider):
    fields = phi(last_name="Müller")

    created = run_as(db, provider, lambda uow: uow.patients.add(provider_id=provider.id, status="active", phi=fields))
    read = run_as(db, provider, lambda uow: uow.patients.get(created.id, provider))

    assert read == created
    assert (read.phi, read.provider_id, read.status, read.version) == (fields, provider.id, "active", 1)


def test_a_patient_is_invisible_to_another_provider_and_an_auditor(db, provider, other_provider):
    patient = add_patient(db, provider)
    auditor = actor_for(add_user(db, "auditor"))

    assert run_as(db, other_provider, lambda uow: uow.patients.get(patient.id, other_provider)) is None
    assert run_as(db, auditor, lambda uow: uow.patients.get(patient.id, auditor)) is None


def test_an_admin_sees_every_providers_patient(db, provider, admin):
    patient = add_patient(db, provider)

    assert run_as(db, admin, lambda uow: uow.patients.get(patient.id, admin)).phi == patient.phi


def test_an_unknown_patient_reads_as_none(db, admin):
    assert run_as(db, admin, lambda uow: uow.patients.get(uuid.uuid4(), admin)) is None


def test_a_patient_for_an_unknown_provider_is_invalid_on_provider_id(db, admin):
    with pytest.raises(Invalid) as raised:
        run_as(db, admin, lambda uow: uow.patients.add(provider_id=uuid.uuid4(), status="active", phi=phi()))

    assert raised.value.field == "provider_id"


def test_a_second_live_patient_with_the_same_mrn_in_another_case_is_a_conflict(db, provider, other_provider):
    add_patient(db, provider, mrn="MRN-abc-1")

    with pytest.raises(Conflict) as raised:
        add_patient(db, other_provider, mrn="mrn-ABC-1 ")

    assert raised.value.field == "mrn"
    assert "abc" not in raised.value.detail.lower()


def list_ids(db, actor, **filters):
    return [p.id for p in run_as(db, actor, lambda uow: uow.patients.list(actor, **filters))]


def test_a_provider_lists_only_their_own_patients_and_an_admin_lists_all(db, provider, other_provider, admin):
    mine = [add_patient(db, provider).id for _ in range(2)]
    theirs = add_patient(db, other_provider).id

    assert sorted(list_ids(db, provider)) == sorted(mine)
    assert set(mine) | {theirs} <= set(list_ids(db, admin))
    assert list_ids(db, other_provider) == [theirs]


def test_patients_are_listed_in_keyset_pages_without_gaps_or_repeats(db, provider):
    created = [add_patient(db, provider) for _ in range(5)]

    seen, after = [], None
    while page := run_as(db, provider, lambda uow: uow.patients.list(provider, after=after, limit=2)):
        assert len(page) <= 2
        seen.extend(page)
        after = (page[-1].created_at, page[-1].id)

    assert [p.id for p in seen] == [p.id for p in sorted(created, key=lambda p: (p.created_at, p.id))]


def test_patients_are_filtered_by_status(db, provider):
    active = add_patient(db, provider, status="active").id
    inactive = add_patient(db, provider, status="inactive").id

    assert list_ids(db, provider, status="inactive") == [inactive]
    assert list_ids(db, provider, status="active") == [active]
    assert list_ids(db, provider, status="deceased") == []


def test_patients_are_filtered_by_birth_year_range_inclusive(db, provider):
    born = {year: add_patient(db, provider, date_of_birth=f"{year}-06-15").id for year in (1950, 1980, 1981, 2010)}

    assert set(list_ids(db, provider, birth_year_from=1980, birth_year_to=1981)) == {born[1980], born[1981]}
    assert set(list_ids(db, provider, birth_year_from=1981)) == {born[1981], born[2010]}
    assert set(list_ids(db, provider, birth_year_to=1950)) == {born[1950]}


def test_patients_are_found_by_mrn_ignoring_case_and_spacing(db, provider):
    wanted = add_patient(db, provider, mrn="MRN-Alpha-7").id
    add_patient(db, provider, mrn="MRN-Alpha-8")

    assert list_ids(db, provider, mrn="  mrn-alpha-7 ") == [wanted]
    assert list_ids(db, provider, mrn="MRN-Alpha-9") == []


def test_patients_are_found_by_email_ignoring_case(db, provider):
    wanted = add_patient(db, provider, email="Grace.Hopper@Example.org").id
    add_patient(db, provider, email="someone@example.org")
    add_patient(db, provider, email=None)

    assert list_ids(db, provider, email="grace.hopper@EXAMPLE.ORG") == [wanted]


def test_patients_are_found_by_last_name_ignoring_case_and_accents(db, provider):
    mueller = add_patient(db, provider, last_name="Müller").id
    muller = add_patient(db, provider, last_name="MULLER").id
    add_patient(db, provider, last_name="Miller")

    assert set(list_ids(db, provider, last_name="muller")) == {mueller, muller}
    assert set(list_ids(db, provider, last_name="Müller")) == {mueller, muller}


def test_lookups_combine_with_the_providers_scope(db, provider, other_provider):
    add_patient(db, other_provider, last_name="Hopper")

    assert list_ids(db, provider, last_name="Hopper") == []


def test_a_patient_update_replaces_phi_and_its_indexes_when_the_version_matches(db, provider):
    patient = add_patient(db, provider, last_name="Lovelace", date_of_birth="1985-12-10")
    new_phi = {**patient.phi, "last_name": "King", "date_of_birth": "1990-01-01"}

    updated = run_as(db, provider, lambda uow: uow.patients.update(patient.id, 1, provider, status="inactive", phi=new_phi))

    assert (updated.version, updated.status, updated.phi) == (2, "inactive", new_phi)
    assert run_as(db, provider, lambda uow: uow.patients.get(patient.id, provider)).phi == new_phi
    assert list_ids(db, provider, last_name="king") == [patient.id]
    assert list_ids(db, provider, last_name="Lovelace") == []
    assert list_ids(db, provider, birth_year_from=1990, birth_year_to=1990) == [patient.id]


def test_a_patient_update_with_a_stale_version_returns_none_and_changes_nothing(db, provider):
    patient = add_patient(db, provider, last_name="Lovelace")
    run_as(db, provider, lambda uow: uow.patients.update(patient.id, 1, provider, status="active",
                                           phi={**patient.phi, "last_name": "First"}))

    stale = run_as(db, provider, lambda uow: uow.patients.update(patient.id, 1, provider, status="active",
                                                   phi={**patient.phi, "last_name": "Second"}))

    assert stale is None
    assert run_as(db, provider, lambda uow: uow.patients.get(patient.id, provider)).phi["last_name"] == "First"


def test_another_provider_cannot_update_a_patient(db, provider, other_provider):
    patient = add_patient(db, provider)

    assert run_as(db, other_provider, lambda uow: uow.patients.update(patient.id, 1, other_provider, status="inactive",
                                                  phi=patient.phi)) is None
    assert run_as(db, provider, lambda uow: uow.patients.get(patient.id, provider)).status == "active"


def test_deleting_a_patient_is_soft_and_hides_it(db, conn, provider):
    patient = add_patient(db, provider)

    assert run_as(db, provider, lambda uow: uow.patients.delete(patient.id, 1, provider)) is True

    deleted_at, version = conn.execute("SELECT deleted_at, version FROM patients WHERE id = %s",
                                       (patient.id,)).fetchone()
    assert deleted_at is not None and version == 2
    assert run_as(db, provider, lambda uow: uow.patients.get(patient.id, provider)) is None
    assert patient.id not in list_ids(db, provider)
    assert run_as(db, provider, lambda uow: uow.patients.delete(patient.id, 2, provider)) is False


def test_a_delete_with_a_stale_version_or_out_of_scope_does_nothing(db, conn, provider, other_provider):
    patient = add_patient(db, provider)

    assert run_as(db, provider, lambda uow: uow.patients.delete(patient.id, 7, provider)) is False
    assert run_as(db, other_provider, lambda uow: uow.patients.delete(patient.id, 1, other_provider)) is False
    see_all(conn)
    assert conn.execute("SELECT deleted_at FROM patients WHERE id = %s", (patient.id,)).fetchone()[0] is None


def test_a_deleted_patients_mrn_can_be_registered_again(db, provider):
    patient = add_patient(db, provider, mrn="MRN-reused")
    run_as(db, provider, lambda uow: uow.patients.delete(patient.id, 1, provider))

    again = add_patient(db, provider, mrn="MRN-reused")

    assert list_ids(db, provider, mrn="MRN-reused") == [again.id]


def test_patient_phi_is_not_readable_in_a_raw_select(db, conn, provider):
    patient = add_patient(db, provider, first_name="Augusta", last_name="Byron-King",
                          mrn="MRN-SECRET-42", email="augusta@example.org", date_of_birth="1915-12-10",
                          phone="+44 20 7946 1234")

    raw = conn.execute("SELECT row_to_json(p)::text FROM patients p WHERE id = %s", (patient.id,)).fetchone()[0]
    raw_lower = raw.lower()

    for secret in ("Augusta", "Byron-King", "MRN-SECRET-42", "augusta@example.org", "1915-12-10",
                   "7946 1234", "morning appointments"):
        assert secret.lower() not in raw_lower, secret
    stored = conn.execute("SELECT phi FROM patients WHERE id = %s", (patient.id,)).fetchone()[0]
    assert b"Augusta" not in bytes(stored)


def test_envelope_copied_into_another_patients_row_fails_to_decrypt(db, conn, provider):
    victim = add_patient(db, provider, last_name="Victim")
    target = add_patient(db, provider, last_name="Target")

    conn.execute("UPDATE patients SET phi = src.phi, phi_key_id = src.phi_key_id"
                 "  FROM patients src WHERE src.id = %s AND patients.id = %s", (victim.id, target.id))

    with pytest.raises(DecryptionError) as raised:
        run_as(db, provider, lambda uow: uow.patients.get(target.id, provider))

    assert "failed authentication" in str(raised.value)
    assert "Victim" not in str(raised.value)
    assert run_as(db, provider, lambda uow: uow.patients.get(victim.id, provider)).phi["last_name"] == "Victim"


def test_an_altered_envelope_fails_to_decrypt(db, conn, provider):
    patient = add_patient(db, provider)
    conn.execute("UPDATE patients SET phi = set_byte(phi, 20, get_byte(phi, 20) # 1) WHERE id = %s", (patient.id,))

    with pytest.raises(DecryptionError, match="failed authentication"):
        run_as(db, provider, lambda uow: uow.patients.get(patient.id, provider))


# --- audit events ----------------------------------------------------------------------------

def audit_rows(conn, request_id):
    return conn.execute(
        "SELECT actor_id, actor_role, action, event_type, entity_type, entity_id, patient_id, outcome,"
        "       client_addr, request_id, fields FROM audit_events WHERE request_id = %s ORDER BY id",
        (request_id,)).fetchall()


def test_audit_events_are_written_with_the_requests_context(db, conn, provider):
    patient_id, other_user = uuid.uuid4(), uuid.uuid4()
    events = [
        AuditEvent("R", "patient.read", "patient", patient_id, patient_id, fields=("mrn", "last_name")),
        AuditEvent("E", "auth.login", "user", outcome="failure", actor_id=other_user),
    ]

    db.run(lambda uow: uow.audit_events.add_all(events, actor=provider, client_addr="192.0.2.1",
                                                request_id="req-audit-1"))

    addr = ipaddress.ip_address("192.0.2.1")
    assert audit_rows(conn, "req-audit-1") == [
        (provider.id, "provider", "R", "patient.read", "patient", str(patient_id), patient_id, "success",
         addr, "req-audit-1", ["last_name", "mrn"]),
        (other_user, "provider", "E", "auth.login", "user", None, None, "failure", addr, "req-audit-1", []),
    ]


def test_audit_events_without_an_actor_are_written(db, conn):
    db.run(lambda uow: uow.audit_events.add_all([AuditEvent("E", "auth.login", outcome="failure")],
                                                actor=None, client_addr=None, request_id="req-audit-2"))

    assert audit_rows(conn, "req-audit-2") == [
        (None, None, "E", "auth.login", None, None, None, "failure", None, "req-audit-2", []),
    ]
