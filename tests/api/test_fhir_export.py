"""GET /api/v1/patients/{id}/export: the patient's record as FHIR R4 NDJSON.

Every line of an export of a patient with every kind of data (all biometric kinds, appointments
in every status, every record type with amendments, open, acknowledged and resolved alerts) is
validated with the ``fhir.resources`` R4B models; codes, units, references and statuses are
checked one by one; then scope, authentication, audit, the snapshot and a failure mid-stream.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import importlib
import json
import logging
import uuid
from urllib.parse import quote

import psycopg
import pytest

from clarity import create_app, fhir
from clarity.api.export import ExportInterrupted
from clarity.security.access import new_token
from clarity.services import export
from clarity.services.biometrics import KINDS
from tests.conftest import Staff, checked, make_settings, patient_body

API = "/api/v1"
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
NDJSON = "application/fhir+ndjson"
# One reading of each kind, inside its plausible range; heart rate and SpO2 outside their
# default alert rules, so each raises an alert.
VALUES = {"heart_rate": 150, "bp_systolic": 121, "bp_diastolic": 79, "spo2": 85, "temperature": 37.1,
          "respiratory_rate": 14, "glucose": 98, "weight": 71.5, "steps": 4200}
EXPECTED_CODES = {  # kind: (LOINC, UCUM, category)
    "heart_rate": ("8867-4", "/min", "vital-signs"), "bp_systolic": ("8480-6", "mm[Hg]", "vital-signs"),
    "bp_diastolic": ("8462-4", "mm[Hg]", "vital-signs"), "spo2": ("59408-5", "%", "vital-signs"),
    "temperature": ("8310-5", "Cel", "vital-signs"), "respiratory_rate": ("9279-1", "/min", "vital-signs"),
    "glucose": ("2339-0", "mg/dL", "vital-signs"), "weight": ("29463-7", "kg", "vital-signs"),
    "steps": ("55423-8", "{steps}", "activity"),
}
SSN = "123-45-6789"


@dataclasses.dataclass
class Chart:
    patient: dict
    notes: dict  # original id -> (amendment id, amended text)
    lab_amended: str
    appointments: dict  # id -> Clarity status
    alerts: dict  # id -> Clarity status
    document: dict  # an uploaded document (another one was deleted)


def fill_chart(client, staff, create_patient, conn) -> Chart:
    """A patient of ``staff`` with some of everything, through the API (and one appointment
    moved into the past in SQL, so it can be completed)."""
    patient = create_patient(staff, ssn=SSN)
    url = f"{API}/patients/{patient['id']}"

    def send(method, path, body=None, version=None, status=201):
        headers = {**staff.headers, **({"If-Match": f'"{version}"'} if version is not None else {})}
        response = client.open(path if path.startswith(API) else f"{url}{path}", method=method, json=body,
                               headers=headers)
        assert response.status_code == status, response.get_data()[:300]
        return response.get_json() if response.data else None

    send("POST", "/biometrics", [
        {"kind": kind, "value": value, "unit": KINDS[kind].unit, "source_device": f"device-{i % 2}",
         "recorded_at": (NOW - dt.timedelta(hours=i + 1)).isoformat()} for i, (kind, value) in enumerate(VALUES.items())])
    alerts = {a["id"]: a for a in send("GET", "/alerts", status=200)}
    first, second = sorted(alerts)
    send("PATCH", f"{API}/alerts/{first}", {"status": "acknowledged"}, alerts[first]["version"], status=200)
    send("PATCH", f"{API}/alerts/{second}", {"status": "resolved"}, alerts[second]["version"], status=200)

    appointments = {}
    for days, status in ((1, "scheduled"), (2, "cancelled"), (3, "completed")):
        starts = NOW + dt.timedelta(days=days)
        booked = send("POST", "/appointments", {"starts_at": starts.isoformat(),
                                                "ends_at": (starts + dt.timedelta(minutes=30)).isoformat()})
        appointments[booked["id"]] = status
        if status == "cancelled":
            send("PATCH", f"{API}/appointments/{booked['id']}", {"status": "cancelled"}, booked["version"], status=200)
    completed = next(i for i, s in appointments.items() if s == "completed")
    conn.execute("SELECT set_config('clarity.actor_id', %s, true), set_config('clarity.actor_role', %s, true)",
                 (str(staff.id), staff.role))
    conn.execute("UPDATE appointments SET starts_at = now() - interval '2 hours', ends_at = now() - interval '1 hour',"
                 " status = 'completed', version = version + 1 WHERE id = %s", (completed,))

    def record(type_, body, amends=None):
        return send("POST", "/records", {"type": type_, "body": body, **({"amends_id": amends} if amends else {})})

    note = record("note", {"text": "Seen in clinic; café au lait spots."})
    amendment = record("note", {"text": "Seen in clinic; café au lait spots on the left arm."}, note["id"])
    record("note", {"text": "Phoned about results."})
    record("diagnosis", {"code": "E11.9", "description": "Type 2 diabetes mellitus without complications"})
    record("prescription", {"medication": "Metformin", "dose": "500 mg", "route": "oral", "frequency": "twice daily",
                            "duration_days": 90})
    record("prescription", {"medication": "Salbutamol", "dose": "100 µg", "route": "inhaled", "frequency": "as needed"})
    lab = record("lab_result", {"test": "HbA1c", "value": 7.9, "unit": "%", "reference_range": "4.0-5.6",
                                "flag": "high"})
    record("lab_result", {"test": "HbA1c", "value": 7.4, "unit": "%", "flag": "high"}, lab["id"])
    record("lab_result", {"test": "Urine culture", "value": "positive", "unit": "n/a", "flag": "abnormal"})
    record("lab_result", {"test": "Casts", "value": 3, "unit": "per low-power field"})
    final_alerts = {a["id"]: a["status"] for a in send("GET", "/alerts", status=200)}

    def upload(title):
        response = client.post(f"{url}/documents", data=b"%PDF-1.4\n%test\n", content_type="application/pdf",
                               headers={**staff.headers, "Document-Title": quote(title, safe=""),
                                        "Content-Disposition": "attachment; filename=scan.pdf"})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    document, deleted = upload("Consent form"), upload("Filed under the wrong patient")
    send("DELETE", f"{API}/documents/{deleted['id']}", version=deleted["version"], status=204)
    return Chart(patient, {note["id"]: (amendment["id"], "Seen in clinic; café au lait spots on the left arm.")},
                 lab["id"], appointments, final_alerts, document)


def parse(body: bytes) -> list[dict]:
    assert body.endswith(b"\n")
    return [json.loads(line) for line in body.split(b"\n")[:-1]]


def fhir_model(resource_type: str):
    return getattr(importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}"), resource_type)


def by_type(resources, resource_type) -> list[dict]:
    return [r for r in resources if r["resourceType"] == resource_type]


@pytest.fixture
def chart(client, provider, create_patient, conn) -> Chart:
    return fill_chart(client, provider, create_patient, conn)


@pytest.fixture
def exported(client, provider, chart) -> list[dict]:
    response = client.get(f"{API}/patients/{chart.patient['id']}/export", headers=provider.headers)
    assert response.status_code == 200, response.get_data()[:300]
    return parse(response.get_data())


def test_every_line_is_a_valid_fhir_r4_resource(exported):
    for resource in exported:
        fhir_model(resource["resourceType"]).model_validate(resource)
    counts = {t: len(by_type(exported, t)) for t in export.RESOURCE_TYPES}
    assert counts == {"Patient": 1, "Observation": len(VALUES) + 3, "Condition": 1, "MedicationRequest": 2,
                      "DocumentReference": 3, "Appointment": 3, "Flag": 2}
    assert len({(r["resourceType"], r["id"]) for r in exported}) == len(exported)


def test_the_response_is_an_uncached_ndjson_attachment(client, provider, chart):
    response = client.get(f"{API}/patients/{chart.patient['id']}/export", headers=provider.headers)
    response.get_data()
    assert response.mimetype == NDJSON
    assert response.headers["Content-Disposition"] == f'attachment; filename="patient-{chart.patient["id"]}.ndjson"'
    assert response.headers["Cache-Control"] == "no-store"


def test_every_resource_names_the_patient_and_has_a_clarity_uuid(exported, chart):
    patient_ref = {"reference": f"Patient/{chart.patient['id']}"}
    assert exported[0]["resourceType"] == "Patient" and exported[0]["id"] == chart.patient["id"]
    for resource in exported[1:]:
        uuid.UUID(resource["id"])
        if resource["resourceType"] == "Appointment":
            assert {"actor": patient_ref, "status": "accepted"} in resource["participant"]
        else:
            assert resource["subject"] == patient_ref, resource["resourceType"]


def test_the_patient_carries_the_mrn_name_birth_date_gender_telecom_address_and_contact(exported, chart):
    patient, given = exported[0], chart.patient
    assert patient["identifier"] == [{
        "use": "usual", "system": "urn:clarity:mrn", "value": given["mrn"],
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR",
                             "display": "Medical record number"}]}}]
    assert patient["name"] == [{"use": "official", "family": "Lovelace", "given": ["Ada"]}]
    assert (patient["birthDate"], patient["gender"]) == ("1985-12-10", "female")
    assert patient["telecom"] == [{"system": "phone", "value": given["phone"]}, {"system": "email", "value": given["email"]}]
    assert patient["address"] == [{"line": ["12 St James's Square"], "city": "London", "country": "GB"}]
    assert patient["contact"] == [{"relationship": [{"text": "friend"}], "name": {"text": "Charles Babbage"},
                                   "telecom": [{"system": "phone", "value": "+44 20 7946 0001"}]}]
    assert patient["generalPractitioner"] == [{"reference": f"Practitioner/{given['provider_id']}"}]
    assert patient["meta"]["versionId"] == str(given["version"])


def test_the_ssn_insurance_and_notes_are_not_exported(client, provider, chart):
    body = client.get(f"{API}/patients/{chart.patient['id']}/export", headers=provider.headers).get_data(as_text=True)
    for value in (SSN, "943 476 5919", "Prefers morning appointments."):
        assert value not in body


def test_each_reading_has_its_loinc_code_ucum_unit_and_category(exported):
    readings = [o for o in by_type(exported, "Observation") if o["category"][0]["coding"][0]["code"] != "laboratory"]
    assert len(readings) == len(VALUES)
    for observation in readings:
        (coding,) = observation["code"]["coding"]
        kind = next(k for k, (loinc, _, _) in EXPECTED_CODES.items() if loinc == coding["code"])
        loinc, ucum, category = EXPECTED_CODES[kind]
        assert coding["system"] == "http://loinc.org"
        assert observation["category"][0]["coding"][0] == {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category,
            "display": "Vital Signs" if category == "vital-signs" else "Activity"}
        assert observation["valueQuantity"] == {"value": VALUES[kind], "unit": KINDS[kind].unit,
                                                "system": "http://unitsofmeasure.org", "code": ucum}
        profiles = observation.get("meta", {}).get("profile")
        assert profiles == (None if kind == "steps" else ["http://hl7.org/fhir/StructureDefinition/vitalsigns"])
        assert observation["status"] == "final" and observation["effectiveDateTime"].endswith("+00:00")


def test_every_stored_kind_has_a_code_and_its_unit_a_ucum_code():
    assert set(fhir.READING_CODES) == set(KINDS) == set(EXPECTED_CODES)
    assert {kind: (code[0], code[2], code[3]) for kind, code in fhir.READING_CODES.items()} == EXPECTED_CODES


def test_a_readings_id_is_the_same_in_every_export(client, provider, chart, exported):
    again = parse(client.get(f"{API}/patients/{chart.patient['id']}/export", headers=provider.headers).get_data())
    assert [r["id"] for r in again] == [r["id"] for r in exported]


def test_an_amended_record_is_exported_once_as_its_current_version_under_the_original_id(exported, chart):
    (original, (amendment, text)), = chart.notes.items()
    notes = {d["id"]: d for d in by_type(exported, "DocumentReference") if "type" in d}  # not documents
    amended = notes[original]
    assert amendment not in notes
    assert (amended["status"], amended["docStatus"], amended["meta"]["versionId"]) == ("current", "amended", "2")
    assert amended["identifier"] == [{"system": "urn:clarity:medical-record", "value": amendment}]
    (content,) = amended["content"]
    assert content["attachment"]["contentType"] == "text/plain; charset=utf-8"
    assert base64.b64decode(content["attachment"]["data"]).decode() == text
    (other,) = (d for i, d in notes.items() if i != original)
    assert (other["docStatus"], other["meta"]["versionId"]) == ("final", "1")
    lab = next(o for o in by_type(exported, "Observation") if o["id"] == chart.lab_amended)
    assert (lab["status"], lab["valueQuantity"]["value"], lab["meta"]["versionId"]) == ("amended", 7.4, "2")


def test_records_map_to_their_resources_with_codes_values_and_interpretations(exported):
    (condition,) = by_type(exported, "Condition")
    assert condition["code"] == {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9"}],
                                 "text": "Type 2 diabetes mellitus without complications"}
    medications = {m["medicationCodeableConcept"]["text"]: m for m in by_type(exported, "MedicationRequest")}
    assert medications["Metformin"]["dispenseRequest"]["expectedSupplyDuration"]["value"] == 90
    assert "dispenseRequest" not in medications["Salbutamol"]
    assert {m["status"] for m in medications.values()} == {"unknown"}
    labs = {o["code"]["text"]: o for o in by_type(exported, "Observation") if "text" in o["code"]
            and o["category"][0]["coding"][0]["code"] == "laboratory"}
    assert labs["HbA1c"]["valueQuantity"] == {"value": 7.4, "unit": "%", "system": "http://unitsofmeasure.org",
                                              "code": "%"}
    assert labs["HbA1c"]["interpretation"][0]["coding"][0]["code"] == "H"
    assert labs["Urine culture"]["valueString"] == "positive"
    assert labs["Urine culture"]["interpretation"][0]["coding"][0]["code"] == "A"
    assert labs["Casts"]["valueQuantity"] == {"value": 3, "unit": "per low-power field"}  # not a UCUM unit we know


def test_a_live_document_links_to_its_content_and_a_deleted_one_is_left_out(exported, chart):
    documents = [d for d in by_type(exported, "DocumentReference") if d["id"] == chart.document["id"]]
    assert len([d for d in by_type(exported, "DocumentReference") if "type" not in d]) == 1
    (document,) = documents
    assert document["content"] == [{"attachment": {
        "contentType": "application/pdf", "url": f"/api/v1/documents/{chart.document['id']}/content",
        "size": chart.document["size_bytes"], "creation": document["date"], "title": "Consent form"}}]
    assert (document["status"], document["description"]) == ("current", "Consent form")


def test_appointments_map_each_status_and_their_participants(exported, chart, provider):
    appointments = {a["id"]: a for a in by_type(exported, "Appointment")}
    assert {i: a["status"] for i, a in appointments.items()} == {
        i: {"scheduled": "booked", "cancelled": "cancelled", "completed": "fulfilled"}[s]
        for i, s in chart.appointments.items()}
    for appointment in appointments.values():
        assert {"actor": {"reference": f"Practitioner/{provider.id}"}, "status": "accepted"} in appointment["participant"]


def test_alerts_are_flags_pointing_at_the_reading_that_raised_them(exported, chart):
    flags = {f["id"]: f for f in by_type(exported, "Flag")}
    observations = {o["id"] for o in by_type(exported, "Observation")}
    assert set(flags) == set(chart.alerts)
    for alert_id, status in chart.alerts.items():
        flag = flags[alert_id]
        assert flag["status"] == ("inactive" if status == "resolved" else "active")
        assert ("end" in flag["period"]) == (status == "resolved")
        priority, detail = flag["extension"]
        assert priority["url"] == "http://hl7.org/fhir/StructureDefinition/flag-priority"
        assert priority["valueCodeableConcept"]["coding"][0]["code"] == "PH"  # both default rules are high
        assert detail["url"] == "http://hl7.org/fhir/StructureDefinition/flag-detail"
        assert detail["valueReference"]["reference"].removeprefix("Observation/") in observations


def test_the_export_is_audited_once_as_an_export_naming_the_resource_types(client, provider, chart, conn):
    request_id = uuid.uuid4().hex
    response = client.get(f"{API}/patients/{chart.patient['id']}/export",
                          headers={**provider.headers, "X-Request-ID": request_id})
    response.get_data()
    rows = conn.execute("SELECT action, event_type, entity_type, entity_id, patient_id::text, outcome, fields, actor_id"
                        " FROM audit_events WHERE request_id = %s", (request_id,)).fetchall()
    assert rows == [("E", "patient.export", "patient", chart.patient["id"], chart.patient["id"], "success",
                     sorted(export.RESOURCE_TYPES), provider.id)]


def test_another_providers_patient_is_404_like_a_missing_one_and_only_a_denial_is_audited(
        client, make_staff, chart, conn):
    other = make_staff("provider")
    request_id = uuid.uuid4().hex
    hidden = client.get(f"{API}/patients/{chart.patient['id']}/export",
                        headers={**other.headers, "X-Request-ID": request_id})
    missing = client.get(f"{API}/patients/{uuid.uuid4()}/export", headers=other.headers)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.mimetype == "application/problem+json"
    assert hidden.get_json()["detail"] == missing.get_json()["detail"]
    assert chart.patient["last_name"] not in hidden.get_data(as_text=True)
    assert conn.execute("SELECT event_type, outcome FROM audit_events WHERE request_id = %s",
                        (request_id,)).fetchall() == [("patient.export", "denied")]


def test_authentication_comes_first_then_the_role_then_the_query(client, make_staff, chart):
    url = f"{API}/patients/{chart.patient['id']}/export"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert client.get(url, headers=make_staff("auditor").headers).status_code == 403
    assert client.get(f"{url}?_type=Patient", headers=make_staff("admin").headers).status_code == 422


def test_an_admin_exports_any_patient(client, admin, chart):
    response = client.get(f"{API}/patients/{chart.patient['id']}/export", headers=admin.headers)
    assert response.status_code == 200 and parse(response.get_data())[0]["id"] == chart.patient["id"]


def test_the_export_counts_as_an_expensive_request(server, test_database, keyring, conn, redis_url, provider, chart):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    app = create_app(make_settings(server, test_database, rate_limit_enabled=True, redis_url=redis_url,
                                   rate_limit="5 per minute", rate_limit_expensive_cost=3), keyring=keyring)
    app.extensions["clarity"].db.use_connection(conn)
    try:
        client = app.test_client()
        url = f"{API}/patients/{chart.patient['id']}/export"
        first = client.get(url, headers=provider.headers)
        first.get_data()
        assert (first.status_code, first.headers["X-RateLimit-Remaining"]) == (200, "2")
        assert client.get(f"{API}/users/me", headers=provider.headers).status_code == 200  # 4 of 5
        assert client.get(url, headers=provider.headers).status_code == 429  # would be 7
    finally:
        app.extensions["clarity"].db.use_connection(None)


def test_a_failure_mid_stream_cuts_the_stream_and_logs_no_phi(client, provider, chart, monkeypatch, caplog):
    def failing(reader, patient):
        yield from (fhir.reading_observation(str(patient.id), {"reference": f"Patient/{patient.id}"}, r)
                    for r in reader.readings(patient.id))
        raise RuntimeError(f"decryption failed for {patient.phi['last_name']} {patient.phi['mrn']}")

    monkeypatch.setattr(export, "PRODUCERS", (export.PRODUCERS[0], export.Producer("Observation", failing)))
    # Small chunks: the first goes out with the Patient, the failure comes after it.
    monkeypatch.setattr(export, "CHUNK_BYTES", 1)
    response = client.get(f"{API}/patients/{chart.patient['id']}/export", headers=provider.headers)
    assert response.status_code == 200
    with caplog.at_level(logging.INFO), pytest.raises(ExportInterrupted):
        response.get_data()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "stopped mid-stream (RuntimeError" in logged
    assert chart.patient["last_name"] not in logged and chart.patient["mrn"] not in logged


def staff_of(app, role: str) -> Staff:
    """A staff user with a live token, committed in ``app``'s database."""
    passwords = app.extensions["clarity"].passwords

    def work(uow):
        email = f"{role}-{uuid.uuid4().hex[:8]}@clarity.test"
        user = uow.users.add(email=email, display_name=f"Test {role}", role=role, password_hash=passwords.hash("x" * 12))
        token, digest = new_token()
        uow.tokens.add(user_id=user.id, token_hash=digest, max_age_seconds=3600, client_addr=None)
        return Staff(user.id, role, email, token, "x" * 12)

    return app.extensions["clarity"].db.run(work)


def test_the_audit_event_is_committed_before_the_first_byte_and_the_stream_reads_one_snapshot(
        server, fresh_database, keyring, monkeypatch):
    monkeypatch.setattr(export, "CHUNK_BYTES", 1)  # the first chunk is the Patient alone
    app = checked(create_app(make_settings(server, fresh_database), keyring=keyring))
    try:
        client, staff = app.test_client(), staff_of(app, "provider")
        patient = client.post(f"{API}/patients", json=patient_body(), headers=staff.headers).get_json()
        url = f"{API}/patients/{patient['id']}"
        starts = NOW + dt.timedelta(days=1)
        slot = {"starts_at": starts.isoformat(), "ends_at": (starts + dt.timedelta(minutes=30)).isoformat()}
        request_id = uuid.uuid4().hex

        response = client.get(f"{url}/export", headers={**staff.headers, "X-Request-ID": request_id})
        # The status is decided and the Patient read; nothing of the body has been taken yet.
        with psycopg.connect(server.url(fresh_database)) as owner:
            committed = owner.execute("SELECT event_type FROM audit_events WHERE request_id = %s",
                                      (request_id,)).fetchall()
        assert committed == [("patient.export",)]
        # Written (and committed) after the export's snapshot was taken: not in this export.
        assert client.post(f"{url}/appointments", json=slot, headers=staff.headers).status_code == 201
        assert by_type(parse(response.get_data()), "Appointment") == []
        again = parse(client.get(f"{url}/export", headers=staff.headers).get_data())
        assert len(by_type(again, "Appointment")) == 1
    finally:
        app.extensions["clarity"].db.close()
