"""Break-glass: a provider opens another provider's patient for a limited time, by stating a reason."""
from datetime import datetime

import pytest

REASON = "Unconscious in the emergency department, allergy history needed"


def grant(client, staff, patient_id, reason=REASON):
    return client.post(f"/api/v1/patients/{patient_id}/emergency-access", json={"reason": reason}, headers=staff.headers)


@pytest.fixture
def stranger_patient(make_staff, create_patient):
    """A patient of another provider."""
    return create_patient(make_staff("provider"), last_name="Stranger")


def test_a_grant_opens_the_patient_to_the_provider(client, provider, stranger_patient):
    url = f"/api/v1/patients/{stranger_patient['id']}"
    assert client.get(url, headers=provider.headers).status_code == 404
    response = grant(client, provider, stranger_patient["id"])
    assert response.status_code == 201
    body = response.get_json()
    assert body["patient_id"] == stranger_patient["id"] and body["provider_id"] == str(provider.id)
    assert client.get(url, headers=provider.headers).get_json()["last_name"] == "Stranger"
    patch = client.patch(url, json={"notes": "Penicillin allergy confirmed"}, headers={**provider.headers, "If-Match": '"1"'})
    assert patch.status_code == 200


def test_a_grant_lasts_the_configured_time(client, app, provider, stranger_patient):
    body = grant(client, provider, stranger_patient["id"]).get_json()
    lasted = datetime.fromisoformat(body["expires_at"]) - datetime.fromisoformat(body["granted_at"])
    assert lasted.total_seconds() == app.extensions["clarity"].settings.emergency_access_minutes * 60 == 3600


def test_an_expired_grant_opens_nothing(client, conn, provider, stranger_patient):
    # Grants are recorded in their provider's own transaction (row-level security, 0016).
    conn.execute("SELECT set_config('clarity.actor_id', %s, true), set_config('clarity.actor_role', 'provider', true)",
                 (str(provider.id),))
    conn.execute("INSERT INTO emergency_access_grants (patient_id, provider_id, reason, reason_key_id, granted_at, expires_at)"
                 " VALUES (%s, %s, '\\x00', 'test1', now() - interval '2 hours', now() - interval '1 hour')",
                 (stranger_patient["id"], provider.id))
    assert client.get(f"/api/v1/patients/{stranger_patient['id']}", headers=provider.headers).status_code == 404


def test_row_level_security_honours_active_grants_only(client, conn, provider, stranger_patient, create_patient):
    own = create_patient(provider)
    conn.execute("SELECT set_config('clarity.actor_id', %s, true), set_config('clarity.actor_role', 'provider', true)",
                 (str(provider.id),))
    visible = {str(r[0]) for r in conn.execute("SELECT id FROM patients")}
    assert stranger_patient["id"] not in visible and own["id"] in visible
    grant(client, provider, stranger_patient["id"])
    visible = {str(r[0]) for r in conn.execute("SELECT id FROM patients")}
    assert stranger_patient["id"] in visible


def test_grants_do_not_allow_deleting_or_widen_lists(client, provider, stranger_patient):
    grant(client, provider, stranger_patient["id"])
    url = f"/api/v1/patients/{stranger_patient['id']}"
    assert client.delete(url, headers={**provider.headers, "If-Match": '"1"'}).status_code == 403
    listed = client.get("/api/v1/patients", headers=provider.headers).get_json()
    assert stranger_patient["id"] not in [p["id"] for p in listed]


def test_a_grant_is_audited_as_a_security_alert_and_reads_under_it_as_emergency(client, conn, provider, stranger_patient):
    grant_id = grant(client, provider, stranger_patient["id"]).get_json()["id"]
    client.get(f"/api/v1/patients/{stranger_patient['id']}", headers=provider.headers)
    rows = conn.execute("SELECT action, event_type, entity_id, fields, row_to_json(a)::text FROM audit_events a"
                        " WHERE actor_id = %s AND patient_id = %s AND outcome = 'success' ORDER BY id",
                        (provider.id, stranger_patient["id"])).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("E", "emergency_access.grant"), ("R", "patient.emergency_read")]
    assert rows[0][2] == grant_id and rows[0][3] == ["reason"]
    assert not any("allergy" in r[4] for r in rows), "the reason is never in the audit trail"


def test_the_reason_is_stored_enciphered(client, conn, provider, stranger_patient):
    grant(client, provider, stranger_patient["id"])
    raw = conn.execute("SELECT row_to_json(g)::text FROM emergency_access_grants g").fetchall()
    assert raw and not any("allergy" in r[0] for r in raw)


def test_admins_list_grants_with_reasons(client, admin, provider, stranger_patient):
    grant(client, provider, stranger_patient["id"])
    response = client.get("/api/v1/emergency-access?active=true", headers=admin.headers)
    assert response.status_code == 200
    assert [g["reason"] for g in response.get_json() if g["patient_id"] == stranger_patient["id"]] == [REASON]


@pytest.mark.parametrize("role", ["provider", "auditor"])
def test_only_admins_list_grants(client, make_staff, role):
    assert client.get("/api/v1/emergency-access", headers=make_staff(role).headers).status_code == 403


@pytest.mark.parametrize("role", ["admin", "auditor"])
def test_only_providers_break_the_glass(client, make_staff, stranger_patient, role):
    assert grant(client, make_staff(role), stranger_patient["id"]).status_code == 403


def test_a_grant_needs_a_reason_and_an_existing_patient(client, provider, stranger_patient):
    assert grant(client, provider, stranger_patient["id"], reason="").status_code == 422
    assert grant(client, provider, stranger_patient["id"], reason="because").status_code == 422
    assert grant(client, provider, "7a1c5f38-0000-4000-8000-000000000000").status_code == 404
