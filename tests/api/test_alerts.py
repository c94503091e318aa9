"""Alert rules and alerts over the API: raised once per reading in the ingest, overrides beating
the global defaults, If-Match on rules and alerts, scoping of the lists."""
from __future__ import annotations

import datetime as dt

import pytest

from clarity.services.biometrics import KINDS
from tests.conftest import statements_run

BASE = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).replace(hour=9, minute=0, second=0, microsecond=0)


def reading(kind="heart_rate", value=72, minute=0, device="watch-1") -> dict:
    return {"kind": kind, "value": value, "unit": KINDS[kind].unit,
            "recorded_at": (BASE + dt.timedelta(minutes=minute)).isoformat(), "source_device": device}


def ingest(client, staff, patient_id, batch) -> dict:
    response = client.post(f"/api/v1/patients/{patient_id}/biometrics", json=batch, headers=staff.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def alerts_of(client, staff, patient_id, query=""):
    return client.get(f"/api/v1/patients/{patient_id}/alerts{query}", headers=staff.headers)


def rules_url(patient_id, kind=""):
    return f"/api/v1/patients/{patient_id}/alert-rules" + (f"/{kind}" if kind else "")


def if_match(staff, version) -> dict:
    return {**staff.headers, "If-Match": f'"{version}"'}


@pytest.fixture
def patient(provider, create_patient):
    return create_patient(provider)["id"]


def test_ingest_raises_one_alert_per_reading_outside_the_global_default_and_a_retry_raises_none(client, provider, patient):
    batch = [reading(value=150), reading(value=72, minute=1), reading("spo2", 85), reading("spo2", 97, minute=1),
             reading("weight", 80)]  # no global default for weight
    assert ingest(client, provider, patient, batch)["alerts_raised"] == 2
    raised = alerts_of(client, provider, patient).get_json()
    assert sorted((a["kind"], a["value"], a["min_value"], a["max_value"], a["severity"], a["rule_scope"], a["status"])
                  for a in raised) == [("heart_rate", 150, 40, 130, "high", "global", "open"),
                                       ("spo2", 85, 90, None, "high", "global", "open")]
    assert {a["unit"] for a in raised} == {"bpm", "%"}

    assert ingest(client, provider, patient, batch) == {"received": 5, "stored": 0, "duplicates": 5, "alerts_raised": 0}
    assert len(alerts_of(client, provider, patient).get_json()) == 2


def test_a_patients_override_beats_the_global_default_for_that_patient_only(client, provider, create_patient):
    athlete, other = create_patient(provider)["id"], create_patient(provider)["id"]
    created = client.put(rules_url(athlete, "heart_rate"), headers=provider.headers,
                         json={"min_value": 35, "max_value": 160, "severity": "medium"})
    assert created.status_code == 201 and created.headers["ETag"] == '"1"'
    assert ingest(client, provider, athlete, [reading(value=150), reading(value=38, minute=1)])["alerts_raised"] == 0
    assert ingest(client, provider, athlete, [reading(value=170, minute=2)])["alerts_raised"] == 1
    [alert] = alerts_of(client, provider, athlete).get_json()
    assert (alert["value"], alert["max_value"], alert["severity"], alert["rule_scope"]) == (
        170, 160, "medium", "patient")
    assert ingest(client, provider, other, [reading(value=150)])["alerts_raised"] == 1


def test_the_effective_rules_mark_overrides_with_the_default_beside_them(client, provider, patient):
    assert client.put(rules_url(patient, "spo2"), json={"min_value": 85, "severity": "high"},
                      headers=provider.headers).status_code == 201
    assert client.put(rules_url(patient, "weight"), json={"min_value": 50, "max_value": 90, "severity": "low"},
                      headers=provider.headers).status_code == 201
    response = client.get(rules_url(patient), headers=provider.headers)
    assert response.status_code == 200
    rules = {r["kind"]: r for r in response.get_json()}
    assert set(rules) == {"heart_rate", "bp_systolic", "bp_diastolic", "spo2", "temperature", "respiratory_rate",
                          "glucose", "weight"}
    assert (rules["spo2"]["override"], rules["spo2"]["min_value"], rules["spo2"]["max_value"]) == (True, 85, None)
    assert rules["spo2"]["default"] == {"min_value": 90, "max_value": None, "severity": "high"}
    assert rules["weight"]["override"] and rules["weight"]["default"] is None and rules["weight"]["unit"] == "kg"
    assert not rules["heart_rate"]["override"] and rules["heart_rate"]["default"] is None
    assert (rules["heart_rate"]["min_value"], rules["heart_rate"]["max_value"]) == (40, 130)


def test_replacing_or_deleting_an_override_needs_if_match(client, provider, patient):
    url, body = rules_url(patient, "glucose"), {"min_value": 80, "max_value": 200, "severity": "high"}
    assert client.put(url, json=body, headers=provider.headers).status_code == 201
    assert client.put(url, json=body, headers=provider.headers).status_code == 428
    assert client.put(url, json=body, headers=if_match(provider, 7)).status_code == 412
    replaced = client.put(url, json={**body, "max_value": 220}, headers=if_match(provider, 1))
    assert replaced.status_code == 200 and replaced.headers["ETag"] == '"2"'
    assert (replaced.get_json()["max_value"], replaced.get_json()["updated_by"]) == (220, str(provider.id))

    assert client.delete(url, headers=provider.headers).status_code == 428
    assert client.delete(url, headers=if_match(provider, 1)).status_code == 412
    assert client.delete(url, headers=if_match(provider, 2)).status_code == 204
    glucose = {r["kind"]: r for r in client.get(rules_url(patient), headers=provider.headers).get_json()}["glucose"]
    assert (glucose["override"], glucose["min_value"], glucose["max_value"]) == (False, 70, 250)
    assert client.delete(url, headers=if_match(provider, 2)).status_code == 404


def test_a_rule_must_be_plausible(client, provider, patient):
    def put(body, kind="heart_rate"):
        return client.put(rules_url(patient, kind), json=body, headers=provider.headers)

    assert put({"min_value": 100, "max_value": 60, "severity": "high"}).get_json()["field"] == "max_value"
    assert put({"severity": "high"}).status_code == 422
    assert put({"max_value": 900, "severity": "high"}).get_json()["field"] == "max_value"
    assert put({"max_value": 120, "severity": "urgent"}).status_code == 422
    assert put({"max_value": 120, "severity": "high"}, kind="mood").status_code == 404


def test_only_the_patients_provider_or_an_admin_manages_their_rules(client, make_staff, admin, provider, patient):
    other, auditor = make_staff("provider"), make_staff("auditor")
    body = {"max_value": 120, "severity": "high"}
    assert client.put(rules_url(patient, "heart_rate"), json=body, headers=other.headers).status_code == 404
    assert client.get(rules_url(patient), headers=other.headers).status_code == 404
    assert client.put(rules_url(patient, "heart_rate"), json=body, headers=auditor.headers).status_code == 403
    assert client.get(rules_url(patient), headers=auditor.headers).status_code == 403
    assert client.put(rules_url(patient, "heart_rate"), json=body, headers=admin.headers).status_code == 201


def test_global_defaults_are_changed_by_admins_only_and_apply_to_every_patient(client, admin, provider, patient):
    url, body = "/api/v1/alert-rules/heart_rate", {"min_value": 45, "max_value": 120, "severity": "high"}
    assert client.put(url, json=body, headers=provider.headers).status_code == 403
    assert client.put(url, json=body, headers=admin.headers).status_code == 428
    globals_ = {r["kind"]: r for r in client.get("/api/v1/alert-rules", headers=provider.headers).get_json()}
    replaced = client.put(url, json=body, headers=if_match(admin, globals_["heart_rate"]["version"]))
    assert replaced.status_code == 200 and replaced.get_json()["patient_id"] is None
    assert ingest(client, provider, patient, [reading(value=125)])["alerts_raised"] == 1
    created = client.put("/api/v1/alert-rules/steps", json={"max_value": 50000, "severity": "low"},
                         headers=admin.headers)
    assert created.status_code == 201


def test_an_alert_is_acknowledged_then_resolved_with_if_match_recording_who_and_when(client, make_staff, provider, patient):
    colleague = make_staff("admin")
    ingest(client, provider, patient, [reading(value=180)])
    [alert] = alerts_of(client, provider, patient).get_json()
    url = f"/api/v1/alerts/{alert['id']}"
    fetched = client.get(url, headers=provider.headers)
    assert fetched.status_code == 200 and fetched.headers["ETag"] == '"1"'

    assert client.patch(url, json={"status": "acknowledged"}, headers=provider.headers).status_code == 428
    assert client.patch(url, json={"status": "acknowledged"}, headers=if_match(provider, 2)).status_code == 412
    acked = client.patch(url, json={"status": "acknowledged"}, headers=if_match(provider, 1))
    assert acked.status_code == 200 and acked.headers["ETag"] == '"2"'
    body = acked.get_json()
    assert (body["status"], body["acknowledged_by"], body["resolved_at"]) == ("acknowledged", str(provider.id), None)
    assert body["acknowledged_at"] is not None

    assert client.patch(url, json={"status": "acknowledged"}, headers=if_match(provider, 2)).status_code == 409
    resolved = client.patch(url, json={"status": "resolved"}, headers=if_match(colleague, 2))
    assert resolved.status_code == 200
    assert (resolved.get_json()["resolved_by"], resolved.get_json()["acknowledged_by"]) == (
        str(colleague.id), str(provider.id))
    assert client.patch(url, json={"status": "acknowledged"}, headers=if_match(provider, 3)).status_code == 409
    assert client.patch(url, json={"status": "open"}, headers=if_match(provider, 3)).status_code == 422


def test_an_open_alert_may_be_resolved_directly(client, provider, patient):
    ingest(client, provider, patient, [reading("respiratory_rate", 30)])
    [alert] = alerts_of(client, provider, patient).get_json()
    resolved = client.patch(f"/api/v1/alerts/{alert['id']}", json={"status": "resolved"}, headers=if_match(provider, 1))
    assert resolved.status_code == 200 and resolved.get_json()["acknowledged_at"] is None
    assert alerts_of(client, provider, patient, "?status=open").get_json() == []


def test_the_alerts_list_holds_only_the_actors_patients_and_pages_newest_first(client, make_staff, admin, create_patient):
    a, b = make_staff("provider"), make_staff("provider")
    a_patients = [create_patient(a)["id"] for _ in range(2)]
    b_patient = create_patient(b)["id"]
    for n, patient_id in enumerate(a_patients):
        ingest(client, a, patient_id, [reading(value=150, minute=n), reading(value=160, minute=10 + n)])
    ingest(client, b, b_patient, [reading(value=170, minute=5)])

    def all_pages(staff, query):
        seen, url = [], f"/api/v1/alerts?{query}"
        while url:
            response = client.get(url, headers=staff.headers)
            assert response.status_code == 200, response.get_json()
            seen += response.get_json()
            link = response.headers.get("Link")
            url = link[1:link.index(">")] if link else None
        return seen

    mine = all_pages(a, "status=open&limit=3")
    assert len(mine) == 4 and {x["patient_id"] for x in mine} == set(a_patients)
    assert [x["value"] for x in mine] == [160, 160, 150, 150]
    assert [x["reading_recorded_at"] for x in mine] == sorted((x["reading_recorded_at"] for x in mine), reverse=True)
    assert {x["patient_id"] for x in all_pages(admin, "status=open")} >= set(a_patients) | {b_patient}
    assert all_pages(b, "status=acknowledged") == []
    assert alerts_of(client, a, b_patient).status_code == 404
    hidden = all_pages(b, "status=open")[0]
    assert client.get(f"/api/v1/alerts/{hidden['id']}", headers=a.headers).status_code == 404
    assert client.patch(f"/api/v1/alerts/{hidden['id']}", json={"status": "resolved"},
                        headers=if_match(a, 1)).status_code == 404


def test_auditors_get_403_on_alerts_and_reads_of_alerts_are_audited(client, conn, make_staff, provider, patient):
    auditor = make_staff("auditor")
    ingest(client, provider, patient, [reading(value=150), reading("spo2", 80)])
    assert client.get("/api/v1/alerts", headers=auditor.headers).status_code == 403
    assert alerts_of(client, auditor, patient).status_code == 403
    assert client.get("/api/v1/alerts?status=open", headers=provider.headers).status_code == 200
    denied = conn.execute("SELECT action, event_type, entity_type, patient_id::text, outcome FROM audit_events "
                          "WHERE actor_id = %s ORDER BY id", (auditor.id,)).fetchall()
    assert denied == [("R", "access.denied", "alerts", None, "denied"),
                      ("R", "access.denied", "alerts", patient, "denied")]
    events = conn.execute("SELECT actor_id, event_type, patient_id, fields, outcome FROM audit_events "
                          "WHERE event_type LIKE 'alert.%%' ORDER BY id").fetchall()
    assert [(e[2] and str(e[2]), e[3]) for e in events if e[0] == provider.id] == [
        (None, ["status"]), (patient, ["heart_rate", "spo2"])]


def test_an_emergency_grant_shows_a_patients_rules_but_does_not_let_you_change_them(client, make_staff, provider, patient):
    covering = make_staff("provider")
    assert client.post(f"/api/v1/patients/{patient}/emergency-access", json={"reason": "Covering the night shift"},
                       headers=covering.headers).status_code == 201
    assert client.get(rules_url(patient), headers=covering.headers).status_code == 200
    assert client.put(rules_url(patient, "spo2"), json={"min_value": 88, "severity": "high"},
                      headers=covering.headers).status_code == 403


def grant(client, staff, patient_id):
    response = client.post(f"/api/v1/patients/{patient_id}/emergency-access", json={"reason": "Covering the ward"},
                           headers=staff.headers)
    assert response.status_code == 201, response.get_json()


def test_reading_or_changing_an_alert_through_a_grant_runs_one_read_and_is_audited_as_emergency(
        client, conn, make_staff, provider, patient, monkeypatch):
    responder = make_staff("provider")
    ingest(client, provider, patient, [reading(value=150)])
    [alert] = alerts_of(client, provider, patient).get_json()
    grant(client, responder, patient)
    url = f"/api/v1/alerts/{alert['id']}"
    executed = statements_run(monkeypatch)

    assert client.get(url, headers=responder.headers).status_code == 200
    assert executed == ["get_token_actor", "get_alert", "insert_audit_events"]
    executed.clear()
    assert client.patch(url, json={"status": "acknowledged"}, headers=if_match(responder, 1)).status_code == 200
    assert executed == ["get_token_actor", "get_alert", "update_alert_status", "insert_audit_events"]
    executed.clear()
    assert client.get(url, headers=provider.headers).status_code == 200
    assert executed == ["get_token_actor", "get_alert", "insert_audit_events"]

    monkeypatch.undo()
    events = conn.execute("SELECT actor_id, event_type, patient_id::text FROM audit_events WHERE entity_id = %s "
                          "ORDER BY id", (alert["id"],)).fetchall()
    assert events == [(responder.id, "alert.emergency_read", patient),
                      (responder.id, "alert.emergency_update", patient),
                      (provider.id, "alert.read", patient)]


def test_the_alerts_list_is_one_statement_however_many_patients_are_on_the_page(
        client, conn, make_staff, provider, create_patient, monkeypatch):
    responder = make_staff("provider")
    theirs = [create_patient(provider)["id"] for _ in range(3)]
    own = create_patient(responder)["id"]
    for n, patient_id in enumerate(theirs):
        ingest(client, provider, patient_id, [reading(value=150, minute=n)])
    ingest(client, responder, own, [reading("spo2", 80, minute=5)])
    for patient_id in theirs[:2]:
        grant(client, responder, patient_id)
    executed = statements_run(monkeypatch)

    listed = client.get("/api/v1/alerts", headers=responder.headers)
    assert listed.status_code == 200
    assert executed == ["get_token_actor", "list_alerts", "insert_audit_events"]
    executed.clear()
    assert len(client.get("/api/v1/alerts", headers=provider.headers).get_json()) == 3
    assert executed == ["get_token_actor", "list_alerts", "insert_audit_events"]

    monkeypatch.undo()
    assert {a["patient_id"] for a in listed.get_json()} == {*theirs[:2], own}
    events = conn.execute("SELECT event_type, patient_id::text, fields FROM audit_events WHERE actor_id = %s "
                          "AND patient_id IS NOT NULL AND event_type LIKE 'alert.%%'", (responder.id,)).fetchall()
    assert sorted(events) == sorted([("alert.emergency_list", theirs[0], ["heart_rate"]),
                                     ("alert.emergency_list", theirs[1], ["heart_rate"]),
                                     ("alert.list", own, ["spo2"])])
