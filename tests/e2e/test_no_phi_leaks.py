"""No PHI, token or password anywhere it should not be: not in the application log, not in
gunicorn's access log, not in any error body, whatever path a request takes."""
from __future__ import annotations

import json

import psycopg
import pytest
import requests

from tests.conftest import patient_body
from tests.e2e.conftest import E2E_PASSWORD

pytestmark = pytest.mark.slow

CANARIES = {
    "first_name": "Quetzalcanary", "last_name": "Canaryborough", "mrn": "CANARY-MRN-90210",
    "email": "canary.person@leak.example", "ssn": "987-65-4329", "phone": "+1 555 0100 7788",
    "notes": "canary clinical note: suspected zebrafever",
}


@pytest.fixture(params=["text", "json"])
def served(request, start_gunicorn):
    yield from start_gunicorn(CLARITY_LOG_LEVEL="DEBUG", WEB_CONCURRENCY="1", CLARITY_LOG_FORMAT=request.param)


def test_canary_phi_tokens_and_passwords_appear_in_no_log_and_no_error_body(served, tmp_path, server, database,
                                                                            provider_email):
    api = f"{served}/api/v1"
    error_bodies = []

    def call(method, path, expect, **kwargs):
        response = requests.request(method, f"{api}{path}", timeout=10, **kwargs)
        assert response.status_code == expect, (method, path, response.status_code, response.text[:300])
        if response.status_code >= 400:
            error_bodies.append(response.text)
        return response

    call("POST", "/auth/tokens", 401, json={"email": provider_email, "password": "canary-wrong-password-77"})
    token = call("POST", "/auth/tokens", 201, json={"email": provider_email, "password": E2E_PASSWORD}).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}

    patient = call("POST", "/patients", 201, json=patient_body(**CANARIES), headers=auth).json()
    url = f"/patients/{patient['id']}"
    call("POST", "/patients", 409, json=patient_body(**{**CANARIES, "mrn": CANARIES["mrn"].lower()}), headers=auth)
    call("POST", "/patients", 422, json=patient_body(email="canary.invalid@@leak.example"), headers=auth)
    call("POST", "/patients", 422, json=patient_body(date_of_birth="CANARY-DOB-1999"), headers=auth)
    call("POST", "/patients", 422, json=patient_body(sex="canary-sex-value"), headers=auth)
    call("POST", "/patients", 422, json=patient_body(notes="canary-huge-" + "x" * 20_000), headers=auth)
    call("POST", "/patients", 400, data='{"first_name": "CanaryMalformedJson",', headers={
        **auth, "Content-Type": "application/json"})
    call("POST", "/patients", 415, data="first_name=CanaryFormEncoded", headers={
        **auth, "Content-Type": "application/x-www-form-urlencoded"})
    call("POST", "/patients/search", 200, json={"mrn": CANARIES["mrn"]}, headers=auth)
    call("POST", "/patients/search", 422, json={"mrn": "canary\x00nul"}, headers=auth)
    call("PATCH", url, 412, json={"last_name": "Canarystale"}, headers={**auth, "If-Match": '"9"'})
    call("PATCH", url, 428, json={"last_name": "Canarynomatch"}, headers=auth)
    call("GET", "/patients/00000000-0000-4000-8000-000000000000", 404, headers=auth)
    call("GET", "/users/me", 401, headers={"Authorization": "Bearer canary-forged-token"})

    with psycopg.connect(server.url(database), autocommit=True) as owner:
        # A failing dependency: the envelope no longer authenticates -> 500.
        owner.execute("UPDATE patients SET phi = set_byte(phi, 20, get_byte(phi, 20) # 1) WHERE id = %s",
                      (patient["id"],))
        call("GET", url, 500, headers=auth)
        # Another: the audit trail refuses writes -> 503.
        owner.execute("REVOKE INSERT ON audit_events FROM clarity_app")
        try:
            call("POST", "/patients", 503, json=patient_body(first_name="Canaryduringoutage"), headers=auth)
        finally:
            owner.execute("GRANT INSERT ON audit_events TO clarity_app")

    log = (tmp_path / "gunicorn.log").read_text()
    if log.lstrip().startswith("{"):
        assert_json_lines(log, token_owner=provider_email)
    else:
        assert "POST /api/v1/patients" in log, "the access log was captured"
    secrets = [*CANARIES.values(), "canary.invalid@@leak.example", "CANARY-DOB-1999", "canary-sex-value",
               "canary-huge-", "CanaryMalformedJson", "CanaryFormEncoded", "Canarystale", "Canarynomatch",
               "canary-forged-token", "canary-wrong-password-77", "Canaryduringoutage", token, E2E_PASSWORD]
    for secret in secrets:
        assert secret.lower() not in log.lower(), f"leaked into the log: {secret[:12]}…"
        for body in error_bodies:
            assert secret.lower() not in body.lower(), f"leaked into an error body: {secret[:12]}…"


def assert_json_lines(log: str, token_owner: str) -> None:
    """CLARITY_LOG_FORMAT=json: every line is one JSON object with time, level and logger, and
    every request has an access line with its route template (never the path), status,
    duration, request id and, once signed in, the actor."""
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    assert {"request_id", "method", "route", "status", "duration_ms", "actor_id"} <= access[0].keys()
    patient_reads = [line for line in access if line["route"] == "/api/v1/patients/<uuid:patient_id>"]
    assert patient_reads and all(line["actor_id"] and line["request_id"] for line in patient_reads)
    assert {line["status"] for line in patient_reads} >= {404, 412, 428, 500}
    assert any(line["route"] == "/api/v1/auth/tokens" and line["status"] == 401 and line["actor_id"] is None
               for line in access)
    app_errors = [line for line in lines if line["level"] == "ERROR" and line["logger"].startswith("clarity")]
    assert app_errors and all(line["request_id"] and line["route"] for line in app_errors)
