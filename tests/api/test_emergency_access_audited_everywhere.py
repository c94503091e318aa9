"""Emergency access is audited wherever it opens a patient's data.

Every route that reaches a patient (by the patient's id, or by the id of one of their alerts,
appointments or records), called by a provider who holds an emergency-access grant for another
provider's patient, writes ``<entity>.emergency_<action>`` audit events for that request; the
patient's own provider's same calls write none. What a grant does not allow (deleting the
patient, changing their alert rules) answers 403 and is audited as a denied emergency attempt.

The routes come from the URL map: a route this file does not know how to call, or has not
classified as not reaching a patient through a grant, fails the first test.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid

import pytest

from clarity.services.biometrics import KINDS

API = "/api/v1"
PATIENT = f"{API}/patients/<patient_id>"
GRANT = (f"{PATIENT}/emergency-access", "POST")
NOW = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
TWIN = {"model": {"name": "cardio-risk", "version": "1.4.0"}, "parameters": {"resting_hr_baseline": 62},
        "enabled_signals": ["heart_rate"]}

# Routes under /api/v1 that do not reach a patient's data through a grant, and why.
NOT_THROUGH_A_GRANT = {
    (f"{API}/patients", "GET"): "a grant opens one patient by id, it does not widen lists",
    (f"{API}/patients/search", "POST"): "a grant opens one patient by id, it does not widen lists",
    (f"{API}/patients", "POST"): "registers a patient of the caller's",
    (f"{API}/appointments", "GET"): "the schedule: appointments the caller sees patients in, never a grant's",
    (f"{API}/alert-rules", "GET"): "global defaults, no PHI",
    (f"{API}/alert-rules/<kind>", "PUT"): "global defaults, admins only",
    (f"{API}/emergency-access", "GET"): "the grants themselves, admins only",
    (f"{API}/audit-events", "GET"): "the audit trail, no PHI",
    (f"{API}/auth/tokens", "POST"): "login",
    (f"{API}/auth/tokens/current", "DELETE"): "logout",
    (f"{API}/auth/sessions", "GET"): "the caller's own sessions",
    (f"{API}/auth/throttles/<user_id>", "DELETE"): "login throttling of a staff account",
    (f"{API}/auth/sessions/<session_id>", "DELETE"): "the caller's own sessions",
    (f"{API}/users", "GET"): "staff accounts",
    (f"{API}/users", "POST"): "staff accounts",
    (f"{API}/users/<user_id>", "PATCH"): "staff accounts",
    (f"{API}/users/me", "GET"): "the caller's own account",
    (f"{API}/users/me/password", "POST"): "the caller's own account",
    (f"{API}/docs", "GET"): "documentation",
    (f"{API}/openapi.json", "GET"): "documentation",
    (f"{API}/docs/assets/<filename>", "GET"): "documentation",
}


def normalized(rule: str) -> str:
    """A URL rule without its converters: ``<uuid:patient_id>`` becomes ``<patient_id>``."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>:]+)>", r"<\1>", rule)


def api_routes(app) -> set[tuple[str, str]]:
    """Every (rule, method) under /api/v1 in the URL map."""
    return {(normalized(rule.rule), method) for rule in app.url_map.iter_rules()
            if rule.rule.startswith(f"{API}/") for method in rule.methods - {"HEAD", "OPTIONS"}}


def routes_to_call(app) -> list[tuple[str, str]]:
    """The routes of the URL map that reach a patient's data, in CALLS' order; fails on one
    CALLS does not know how to call."""
    routes = api_routes(app) - {GRANT} - set(NOT_THROUGH_A_GRANT)
    assert routes - set(CALLS) == set(), "a route nobody checks for emergency-access auditing: add it to CALLS"
    return [route for route in CALLS if route in routes]


@dataclasses.dataclass
class Chart:
    """A patient of ``owner`` with some of everything, and ``responder``, another provider."""

    client: object
    owner: object
    responder: object
    patient_id: str
    alert_id: str
    appointment_id: str
    record_id: str
    document_id: str

    def url(self, suffix="") -> str:
        return f"{API}/patients/{self.patient_id}{suffix}"

    def version(self, url) -> int:
        """The current version of what ``url`` serves, read by the owner (its ETag)."""
        response = self.client.get(url, headers=self.owner.headers)
        assert response.status_code == 200, response.get_json()
        return int(response.headers["ETag"].strip('"'))

    def rule_version(self, kind) -> int:
        rules = self.client.get(self.url("/alert-rules"), headers=self.owner.headers).get_json()
        return next(rule["version"] for rule in rules if rule["kind"] == kind and rule["override"])


@dataclasses.dataclass
class Visit:
    """One call by ``staff``, tagged with its own request id."""

    chart: Chart
    staff: object
    request_id: str = dataclasses.field(default_factory=lambda: f"ea-{uuid.uuid4().hex}")

    def send(self, method, url, json=None, version=None):
        headers = {**self.staff.headers, "X-Request-ID": self.request_id}
        if version is not None:
            headers["If-Match"] = f'"{version}"'
        return self.chart.client.open(url, method=method, json=json, headers=headers)


def reading(value, days_ago) -> dict:
    return {"kind": "heart_rate", "value": value, "unit": KINDS["heart_rate"].unit, "source_device": "watch-1",
            "recorded_at": (NOW - dt.timedelta(days=days_ago)).isoformat()}


def upload_document(visit):
    headers = {**visit.staff.headers, "X-Request-ID": visit.request_id,
               "Content-Disposition": "attachment; filename=n.txt"}
    return visit.chart.client.post(visit.chart.url("/documents"), data=b"Seen at night.", content_type="text/plain",
                                   headers=headers)


def read_through(response):
    response.get_data()
    return response


def slot(days_ahead) -> dict:
    starts = NOW + dt.timedelta(days=days_ahead)
    return {"starts_at": starts.isoformat(), "ends_at": (starts + dt.timedelta(hours=1)).isoformat()}


# (call, status under the grant, status as the patient's provider), in the order they run: the
# patient is deleted last, a rule is replaced before it is deleted.
CALLS = {
    (PATIENT, "GET"): (lambda v: v.send("GET", v.chart.url()), 200, 200),
    (f"{PATIENT}/overview", "GET"): (lambda v: v.send("GET", v.chart.url("/overview")), 200, 200),
    (PATIENT, "PATCH"): (lambda v: v.send("PATCH", v.chart.url(), {"notes": "Penicillin allergy"},
                                          v.chart.version(v.chart.url())), 200, 200),
    (f"{PATIENT}/biometrics", "POST"): (lambda v: v.send("POST", v.chart.url("/biometrics"), [reading(75, 1)]),
                                        201, 201),
    (f"{PATIENT}/biometrics", "GET"): (lambda v: v.send("GET", v.chart.url("/biometrics")), 200, 200),
    (f"{PATIENT}/biometrics/latest", "GET"): (lambda v: v.send("GET", v.chart.url("/biometrics/latest")), 200, 200),
    (f"{PATIENT}/biometrics/summary", "GET"): (lambda v: v.send("GET", v.chart.url("/biometrics/summary")), 200, 200),
    (f"{PATIENT}/alert-rules", "GET"): (lambda v: v.send("GET", v.chart.url("/alert-rules")), 200, 200),
    (f"{PATIENT}/alert-rules/<kind>", "PUT"): (
        lambda v: v.send("PUT", v.chart.url("/alert-rules/spo2"), {"min_value": 88, "severity": "high"},
                         v.chart.rule_version("spo2")), 403, 200),
    (f"{PATIENT}/alert-rules/<kind>", "DELETE"): (
        lambda v: v.send("DELETE", v.chart.url("/alert-rules/spo2"), version=v.chart.rule_version("spo2")), 403, 204),
    (f"{PATIENT}/alerts", "GET"): (lambda v: v.send("GET", v.chart.url("/alerts")), 200, 200),
    (f"{API}/alerts", "GET"): (lambda v: v.send("GET", f"{API}/alerts"), 200, 200),
    (f"{API}/alerts/<alert_id>", "GET"): (lambda v: v.send("GET", f"{API}/alerts/{v.chart.alert_id}"), 200, 200),
    (f"{API}/alerts/<alert_id>", "PATCH"): (
        lambda v: v.send("PATCH", f"{API}/alerts/{v.chart.alert_id}", {"status": "acknowledged"},
                         v.chart.version(f"{API}/alerts/{v.chart.alert_id}")), 200, 200),
    (f"{PATIENT}/appointments", "POST"): (lambda v: v.send("POST", v.chart.url("/appointments"), slot(3)), 201, 201),
    (f"{PATIENT}/appointments", "GET"): (lambda v: v.send("GET", v.chart.url("/appointments")), 200, 200),
    (f"{API}/appointments/<appointment_id>", "GET"): (
        lambda v: v.send("GET", f"{API}/appointments/{v.chart.appointment_id}"), 200, 200),
    (f"{API}/appointments/<appointment_id>", "PATCH"): (
        lambda v: v.send("PATCH", f"{API}/appointments/{v.chart.appointment_id}", {"status": "cancelled"},
                         v.chart.version(f"{API}/appointments/{v.chart.appointment_id}")), 200, 200),
    (f"{PATIENT}/records", "POST"): (
        lambda v: v.send("POST", v.chart.url("/records"), {"type": "note", "body": {"text": "Seen at night."}}),
        201, 201),
    (f"{PATIENT}/records", "GET"): (lambda v: v.send("GET", v.chart.url("/records")), 200, 200),
    (f"{API}/records/<record_id>", "GET"): (lambda v: v.send("GET", f"{API}/records/{v.chart.record_id}"), 200, 200),
    (f"{PATIENT}/digital-twin", "PUT"): (
        lambda v: v.send("PUT", v.chart.url("/digital-twin"), TWIN, v.chart.version(v.chart.url("/digital-twin"))),
        200, 200),
    (f"{PATIENT}/digital-twin", "GET"): (lambda v: v.send("GET", v.chart.url("/digital-twin")), 200, 200),
    (f"{PATIENT}/digital-twin/versions", "GET"): (
        lambda v: v.send("GET", v.chart.url("/digital-twin/versions")), 200, 200),
    # The export is a stream: read to its end, so its snapshot ends before the next call.
    (f"{PATIENT}/export", "GET"): (lambda v: read_through(v.send("GET", v.chart.url("/export"))), 200, 200),
    (f"{PATIENT}/documents", "POST"): (upload_document, 201, 201),
    (f"{PATIENT}/documents", "GET"): (lambda v: v.send("GET", v.chart.url("/documents")), 200, 200),
    (f"{API}/documents/<document_id>", "GET"): (
        lambda v: v.send("GET", f"{API}/documents/{v.chart.document_id}"), 200, 200),
    (f"{API}/documents/<document_id>/content", "GET"): (
        lambda v: read_through(v.send("GET", f"{API}/documents/{v.chart.document_id}/content")), 200, 200),
    (f"{API}/documents/<document_id>", "DELETE"): (
        lambda v: v.send("DELETE", f"{API}/documents/{v.chart.document_id}",
                         version=v.chart.version(f"{API}/documents/{v.chart.document_id}")), 403, 204),
    (PATIENT, "DELETE"): (lambda v: v.send("DELETE", v.chart.url(), version=v.chart.version(v.chart.url())), 403, 204),
}
DENIED_UNDER_A_GRANT = {route for route, (_, under_grant, _) in CALLS.items() if under_grant == 403}


@pytest.fixture
def chart(client, make_staff, create_patient) -> Chart:
    owner, responder = make_staff("provider"), make_staff("provider")
    patient_id = create_patient(owner)["id"]
    url = f"{API}/patients/{patient_id}"

    def post(path, body, **headers):
        response = client.open(f"{url}{path}", method=headers.pop("method", "POST"), json=body,
                               headers={**owner.headers, **headers})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    assert post("/biometrics", [reading(150, 2)])["alerts_raised"] == 1
    post("/alert-rules/spo2", {"min_value": 90, "severity": "high"}, method="PUT")
    post("/digital-twin", TWIN, method="PUT")
    appointment = post("/appointments", slot(1))
    record = post("/records", {"type": "note", "body": {"text": "Seen in clinic."}})
    alerts = client.get(f"{url}/alerts", headers=owner.headers).get_json()
    document = upload_document(Visit(Chart(client, owner, responder, patient_id, "", "", "", ""), owner)).get_json()
    return Chart(client, owner, responder, patient_id, alerts[0]["id"], appointment["id"], record["id"],
                 document["id"])


def events_of(conn, request_id) -> list[tuple[str, str, str | None]]:
    """(event_type, outcome, patient_id) of every audit event the request wrote."""
    return [(row[0], row[1], row[2] and str(row[2])) for row in conn.execute(
        "SELECT event_type, outcome, patient_id FROM audit_events WHERE request_id = %s ORDER BY id",
        (request_id,))]


def grant(chart) -> tuple[dict, str]:
    """The responder breaks the glass: (the grant, the request id)."""
    visit = Visit(chart, chart.responder)
    response = visit.send("POST", chart.url("/emergency-access"), {"reason": "Unconscious in the emergency department"})
    assert response.status_code == 201, response.get_json()
    return response.get_json(), visit.request_id


def test_every_route_under_api_v1_is_called_here_or_does_not_reach_a_patient_through_a_grant(app):
    known = set(CALLS) | {GRANT} | set(NOT_THROUGH_A_GRANT)
    routes = api_routes(app)
    assert routes - known == set(), "a route nobody checks for emergency-access auditing: add it to CALLS"
    assert known - routes == set(), "a route listed here no longer exists"


def test_the_grant_is_audited_as_its_own_security_event(conn, chart):
    body, request_id = grant(chart)
    assert conn.execute("SELECT action, event_type, outcome, entity_id, patient_id::text FROM audit_events"
                        " WHERE request_id = %s", (request_id,)).fetchall() == [
        ("E", "emergency_access.grant", "success", body["id"], chart.patient_id)]


def test_every_call_under_a_grant_is_audited_as_emergency_access(app, conn, chart):
    grant(chart)
    missing = []
    for route in routes_to_call(app):
        call, expected, _ = CALLS[route]
        visit = Visit(chart, chart.responder)
        response = call(visit)
        assert response.status_code == expected, (route, response.get_json())
        on_patient = [e for e in events_of(conn, visit.request_id) if e[2] == chart.patient_id]
        outcome = "denied" if route in DENIED_UNDER_A_GRANT else "success"
        if not on_patient or any("emergency_" not in e[0] or e[1] != outcome for e in on_patient):
            missing.append((route, on_patient))
    assert missing == [], "calls under a grant not (only) audited as emergency access:\n" + "\n".join(
        f"{method} {rule}: {events}" for (rule, method), events in missing)


def test_what_a_grant_does_not_allow_is_a_denied_emergency_attempt(conn, chart):
    grant(chart)
    seen = {}
    for route in sorted(DENIED_UNDER_A_GRANT):
        visit = Visit(chart, chart.responder)
        assert CALLS[route][0](visit).status_code == 403
        seen[route] = [(e[0], e[1]) for e in events_of(conn, visit.request_id)]
    assert seen == {
        (PATIENT, "DELETE"): [("patient.emergency_delete", "denied")],
        (f"{API}/documents/<document_id>", "DELETE"): [("document.emergency_delete", "denied")],
        (f"{PATIENT}/alert-rules/<kind>", "DELETE"): [("alert_rule.emergency_delete", "denied")],
        (f"{PATIENT}/alert-rules/<kind>", "PUT"): [("alert_rule.emergency_update", "denied")],
    }
    assert chart.client.get(chart.url(), headers=chart.owner.headers).status_code == 200


def test_the_patients_own_provider_making_the_same_calls_writes_no_emergency_event(app, conn, chart):
    grant(chart)  # someone else's grant changes nothing for the owner
    for route in routes_to_call(app):
        call, _, expected = CALLS[route]
        visit = Visit(chart, chart.owner)
        response = call(visit)
        assert response.status_code == expected, (route, response.get_json())
        events = events_of(conn, visit.request_id)
        assert any(e[2] == chart.patient_id for e in events), route
        assert not any("emergency_" in e[0] for e in events), (route, events)
