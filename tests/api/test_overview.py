"""GET /patients/{id}/overview: the patient and its clinical summary from a single statement."""
import datetime as dt

import pytest

from tests.conftest import statements_run

URL = "/api/v1/patients"


def at(minutes_ago=0, days_ahead=0):
    moment = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes_ago) + dt.timedelta(days=days_ahead)
    return moment.replace(microsecond=0).isoformat()


@pytest.fixture
def charted(client, provider, create_patient):
    """A patient with readings (one raising an alert), two appointments and two twin versions."""
    patient = create_patient(provider)
    base = f"{URL}/{patient['id']}"
    readings = [
        {"kind": "heart_rate", "value": 72, "unit": "bpm", "recorded_at": at(30), "source_device": "watch"},
        {"kind": "heart_rate", "value": 150, "unit": "bpm", "recorded_at": at(10), "source_device": "watch"},
        {"kind": "spo2", "value": 97, "unit": "%", "recorded_at": at(20), "source_device": "ring"},
    ]
    assert client.post(f"{base}/biometrics", json=readings, headers=provider.headers).status_code == 201
    for days in (3, 1):
        booked = client.post(f"{base}/appointments", headers=provider.headers, json={
            "starts_at": at(days_ahead=days), "ends_at": at(-30, days_ahead=days)})
        assert booked.status_code == 201, booked.get_json()
    twin = {"model": {"name": "cardio", "version": "1.0.0"}, "parameters": {"gain": 1.5}, "enabled_signals": ["heart_rate"]}
    assert client.put(f"{base}/digital-twin", json=twin, headers=provider.headers).status_code == 201
    twin["parameters"]["gain"] = 2.0
    assert client.put(f"{base}/digital-twin", json=twin, headers={**provider.headers, "If-Match": '"1"'}).status_code == 200
    return patient


def test_the_overview_holds_the_patient_latest_readings_open_alerts_next_appointment_and_twin(client, provider, charted):
    response = client.get(f"{URL}/{charted['id']}/overview", headers=provider.headers)
    assert response.status_code == 200 and response.headers["ETag"] == '"1"'
    body = response.get_json()
    assert body["mrn"] == charted["mrn"] and body["last_name"] == charted["last_name"]
    assert [(r["kind"], r["value"]) for r in body["latest_readings"]] == [("heart_rate", 150), ("spo2", 97)]
    assert [(a["kind"], a["value"]) for a in body["open_alerts"]] == [("heart_rate", 150)]
    assert body["next_appointment"]["starts_at"][:10] == at(days_ahead=1)[:10]
    assert body["digital_twin"]["version"] == 2 and body["digital_twin"]["config"]["parameters"] == {"gain": 2.0}


def test_the_overview_of_a_bare_patient_has_empty_parts(client, provider, create_patient):
    body = client.get(f"{URL}/{create_patient(provider)['id']}/overview", headers=provider.headers).get_json()
    assert (body["latest_readings"], body["open_alerts"], body["next_appointment"], body["digital_twin"]) == ([], [], None, None)


def test_the_overview_is_read_by_one_statement(client, provider, charted, monkeypatch):
    executed = statements_run(monkeypatch)
    assert client.get(f"{URL}/{charted['id']}/overview", headers=provider.headers).status_code == 200
    assert executed == ["get_token_actor", "get_patient_overview", "insert_audit_events"]


def test_the_overview_is_scoped_and_audited(client, conn, make_staff, charted):
    other, auditor = make_staff("provider"), make_staff("auditor")
    assert client.get(f"{URL}/{charted['id']}/overview", headers=other.headers).status_code == 404
    assert client.get(f"{URL}/{charted['id']}/overview", headers=auditor.headers).status_code == 403
    outcomes = conn.execute("SELECT event_type, outcome FROM audit_events WHERE actor_id IN (%s, %s) "
                            "AND patient_id = %s ORDER BY id", (other.id, auditor.id, charted["id"])).fetchall()
    assert outcomes == [("patient.overview", "denied"), ("access.denied", "denied")]
