"""Hostile bodies through gunicorn: deep nesting is 400, huge numbers and invalid Unicode are
422 naming the field, never a 500, and nothing of such a body is stored."""
from __future__ import annotations

import json
import uuid

import psycopg
import pytest
import requests

from clarity.security.passwords import Passwords
from tests.conftest import patient_body
from tests.e2e.conftest import E2E_PASSWORD

pytestmark = pytest.mark.slow

LONE = "\ud800"  # json.dumps writes it as the escape "\ud800", as an attacker would
HUGE = "1" + "0" * 4300


def send(method, url, raw, headers=None):
    return requests.request(method, url, data=raw if isinstance(raw, bytes) else raw.encode(),
                            headers={"Content-Type": "application/json", **(headers or {})}, timeout=10)


@pytest.fixture
def api(gunicorn):
    return f"{gunicorn}/api/v1"


def sign_in(api, email) -> dict:
    response = requests.post(f"{api}/auth/tokens", json={"email": email, "password": E2E_PASSWORD}, timeout=10)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


@pytest.fixture
def admin_headers(server, database, api):
    email = f"admin-{uuid.uuid4().hex[:8]}@clarity.test"
    with psycopg.connect(server.url(database), autocommit=True) as conn:
        conn.execute("INSERT INTO users (email, display_name, role, password_hash) VALUES (%s, 'Admin', 'admin', %s)",
                     (email, Passwords(time_cost=1, memory_kib=1024).hash(E2E_PASSWORD)))
    return sign_in(api, email)


@pytest.fixture
def provider_headers(api, provider_email):
    return sign_in(api, provider_email)


@pytest.fixture
def patient_id(api, provider_headers):
    created = requests.post(f"{api}/patients", json=patient_body(), headers=provider_headers, timeout=10)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def test_deep_nesting_is_400_for_everyone_and_401_first_for_the_anonymous(api, provider_headers):
    for depth in (33, 972, 100_000):
        raw = "[" * depth + "]" * depth
        assert send("POST", f"{api}/patients", raw).status_code == 401
        response = send("POST", f"{api}/patients", raw, provider_headers)
        assert response.status_code == 400, (depth, response.text)
        assert "nests deeper" in response.json()["detail"]
        assert send("POST", f"{api}/auth/tokens", raw).status_code == 400


def test_a_malformed_sign_in_is_4xx_never_500(api, provider_email):
    for raw in (json.dumps({"email": provider_email, "password": LONE}),
                f'{{"email": "{provider_email}", "password": {HUGE}}}'):
        response = send("POST", f"{api}/auth/tokens", raw)
        assert response.status_code == 422 and response.json()["field"] == "password", response.text


def test_a_huge_integer_anywhere_is_422_naming_the_field(api, provider_headers, patient_id):
    raw = json.dumps(patient_body())[:-1] + f', "sex_code": {HUGE}}}'
    response = send("POST", f"{api}/patients", raw, provider_headers)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "sex_code"
    batch = f'[{{"kind": "heart_rate", "value": {HUGE}, "unit": "bpm", "recorded_at": "2026-11-30T10:00:00Z"}}]'
    response = send("POST", f"{api}/patients/{patient_id}/biometrics", batch, provider_headers)
    assert response.status_code == 422 and response.json()["field"] == "[0].value"
    for constant in ("NaN", "Infinity", "-Infinity", "1e999"):
        raw = json.dumps({"status": "active"})[:-1] + f', "x": {constant}}}'
        response = send("PATCH", f"{api}/patients/{patient_id}", raw, {**provider_headers, "If-Match": '"1"'})
        assert response.status_code == 422 and response.json()["field"] == "x", constant


@pytest.mark.parametrize("field", ["first_name", "last_name", "mrn", "email", "phone", "notes"])
def test_a_lone_surrogate_in_a_patient_field_is_422_naming_it_and_nothing_is_stored(
        api, provider_headers, server, database, field):
    body = patient_body(**{field: f"Ada{LONE}"})
    response = send("POST", f"{api}/patients", json.dumps(body), provider_headers)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    with psycopg.connect(server.url(database)) as conn:
        assert conn.execute("SELECT count(*) FROM patients").fetchone()[0] == 0


def test_a_lone_surrogate_is_422_on_every_kind_of_body(api, provider_headers, admin_headers, patient_id):
    cases = [
        ("PATCH", f"/patients/{patient_id}", {"address": {"line1": LONE, "city": "Leeds"}}, "address.line1",
         {**provider_headers, "If-Match": '"1"'}),
        ("POST", "/patients/search", {"last_name": LONE}, "last_name", provider_headers),
        ("POST", f"/patients/{patient_id}/biometrics",
         [{"kind": "heart_rate", "value": 70, "unit": "bpm", "recorded_at": "2026-11-30T10:00:00Z",
           "source_device": LONE}], "[0].source_device", provider_headers),
        ("POST", f"/patients/{patient_id}/records", {"type": "note", "body": {"text": LONE}}, "body.text",
         provider_headers),
        ("POST", f"/patients/{patient_id}/emergency-access", {"reason": f"Crash {LONE}"}, "reason", provider_headers),
        ("POST", "/users", {"email": "x@clarity.test", "display_name": LONE, "role": "provider",
                            "password": "long enough password"}, "display_name", admin_headers),
        ("POST", "/patients", {**patient_body(), LONE: 1}, "?", provider_headers),
    ]
    for method, path, document, field, headers in cases:
        response = send(method, f"{api}{path}", json.dumps(document), headers)
        assert response.status_code == 422, (path, response.text)
        assert response.json().get("field") == field, (path, response.json())
        assert response.headers["Content-Type"] == "application/problem+json"


def test_a_valid_surrogate_pair_is_an_ordinary_character(api, provider_headers):
    response = send("POST", f"{api}/patients", json.dumps(patient_body(first_name="Zo\U0001F600")), provider_headers)
    assert response.status_code == 201, response.text
    assert response.json()["first_name"] == "Zo\U0001F600"
