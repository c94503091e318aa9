"""GET /api/v1/audit-events: auditors and admins read the trail, newest first, in keyset pages;
everyone else gets 403; and every read of the trail is itself audited."""
from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest

URL = "/api/v1/audit-events"


def read_patient(client, staff, patient_id, times=1):
    for _ in range(times):
        assert client.get(f"/api/v1/patients/{patient_id}", headers=staff.headers).status_code == 200


def next_url(response) -> str | None:
    match = re.match(r'<([^>]+)>; rel="next"', response.headers.get("Link", ""))
    return match.group(1) if match else None


def all_pages(client, staff, url) -> list[list[dict]]:
    pages = []
    while url:
        response = client.get(url, headers=staff.headers)
        assert response.status_code == 200, response.get_json()
        pages.append(response.get_json())
        url = next_url(response)
    return pages


@pytest.fixture
def patient(create_patient, provider):
    return create_patient(provider)


@pytest.fixture
def auditor(make_staff):
    return make_staff("auditor")


def test_an_auditor_pages_through_a_patients_trail_newest_first(client, auditor, provider, patient):
    read_patient(client, provider, patient["id"], times=4)

    pages = all_pages(client, auditor, f"{URL}?patient_id={patient['id']}&limit=2")

    assert [len(page) for page in pages] == [2, 2, 1]
    events = [event for page in pages for event in page]
    assert [e["event_type"] for e in events] == ["patient.read"] * 4 + ["patient.create"]
    assert [(e["occurred_at"], e["id"]) for e in events] == sorted(
        ((e["occurred_at"], e["id"]) for e in events), reverse=True)
    read = events[0]
    assert read["actor_id"] == str(provider.id) and read["actor_role"] == "provider"
    assert read["patient_id"] == patient["id"] and read["action"] == "R" and read["outcome"] == "success"
    assert read["fields"] == [] and "Lovelace" not in str(events)


def test_filters_narrow_by_actor_action_and_time_range(client, auditor, admin, provider, patient):
    read_patient(client, provider, patient["id"], times=2)
    read_patient(client, admin, patient["id"])
    base = f"{URL}?patient_id={patient['id']}"
    # Each of these reads adds a (newer) audit.read event to the patient's trail.
    everything = client.get(base, headers=auditor.headers).get_json()
    by_admin = client.get(f"{base}&actor_id={admin.id}", headers=auditor.headers).get_json()
    creates = client.get(f"{base}&action=C", headers=auditor.headers).get_json()
    between = client.get(URL, query_string={"patient_id": patient["id"], "from": everything[2]["occurred_at"],
                                            "to": everything[0]["occurred_at"]}, headers=auditor.headers).get_json()

    assert [e["event_type"] for e in everything] == ["patient.read"] * 3 + ["patient.create"]
    assert [e["actor_id"] for e in by_admin] == [str(admin.id)]
    assert [e["event_type"] for e in creates] == ["patient.create"]
    assert between == everything[1:3], "from is inclusive, to exclusive"


def test_a_timestamp_filter_survives_into_the_next_page_link(client, auditor, provider, patient):
    read_patient(client, provider, patient["id"], times=3)
    since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).isoformat()

    pages = all_pages(client, auditor, f"{URL}?patient_id={patient['id']}&limit=1&from={since.replace('+', '%2B')}")

    assert len(pages) == 4


def test_admins_read_the_trail_too(client, admin, patient):
    assert client.get(f"{URL}?patient_id={patient['id']}", headers=admin.headers).status_code == 200


def test_a_provider_gets_403_and_the_attempt_is_audited_as_denied(client, conn, provider, patient):
    response = client.get(f"{URL}?patient_id={patient['id']}", headers=provider.headers)

    assert response.status_code == 403
    row = conn.execute("SELECT outcome, action, entity_type FROM audit_events WHERE event_type = 'access.denied' "
                       "AND actor_id = %s", (provider.id,)).fetchone()
    assert row == ("denied", "R", "audit_events")


def test_reading_the_trail_is_itself_audited_with_the_filter_names(client, conn, auditor, patient):
    response = client.get(f"{URL}?patient_id={patient['id']}&action=R&to=2999-01-01T00:00:00Z",
                          headers=auditor.headers)

    assert response.status_code == 200
    row = conn.execute("SELECT action, outcome, fields, patient_id::text, request_id FROM audit_events "
                       "WHERE event_type = 'audit.read' AND actor_id = %s", (auditor.id,)).fetchone()
    assert row == ("R", "success", ["action", "patient_id", "to"], patient["id"],
                   response.headers["X-Request-ID"])
    next_read = client.get(f"{URL}?actor_id={auditor.id}", headers=auditor.headers).get_json()
    assert [e["event_type"] for e in next_read] == ["audit.read"]


@pytest.mark.parametrize("query", ["action=X", "limit=0", "limit=201", "patient_id=nope", "from=yesterday",
                                   "color=red"])
def test_invalid_filters_are_422(client, auditor, query):
    assert client.get(f"{URL}?{query}", headers=auditor.headers).status_code == 422


def test_a_cursor_from_another_list_is_400(client, auditor, admin):
    users_page = client.get("/api/v1/users?limit=1", headers=admin.headers)
    cursor = re.search(r"cursor=([^&>]+)", users_page.headers["Link"]).group(1)
    assert client.get(f"{URL}?cursor={cursor}", headers=auditor.headers).status_code == 400


def test_without_a_token_it_is_401(client):
    assert client.get(f"{URL}?patient_id={uuid.uuid4()}").status_code == 401
