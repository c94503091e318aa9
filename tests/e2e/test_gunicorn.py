"""End to end: the API served by gunicorn (two sync workers, configured only by environment
variables, as in production) against PostgreSQL, driven over HTTP."""
from __future__ import annotations


import pytest
import requests

from tests.conftest import patient_body
from tests.e2e.conftest import E2E_PASSWORD

pytestmark = pytest.mark.slow

PASSWORD = E2E_PASSWORD


def test_provider_manages_a_patient_over_http_from_login_to_logout(gunicorn, provider_email):
    api = f"{gunicorn}/api/v1"

    login = requests.post(f"{api}/auth/tokens", json={"email": provider_email, "password": PASSWORD}, timeout=10)
    assert login.status_code == 201, login.text
    headers = {"Authorization": f"Bearer {login.json()['token']}"}

    body = patient_body()
    created = requests.post(f"{api}/patients", json=body, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    patient_id = created.json()["id"]
    assert created.headers["Location"].endswith(f"/api/v1/patients/{patient_id}")

    read = requests.get(f"{api}/patients/{patient_id}", headers=headers, timeout=10)
    assert read.status_code == 200
    assert read.headers["Cache-Control"] == "no-store"
    assert read.json()["mrn"] == body["mrn"]
    assert read.json()["last_name"] == "Lovelace"

    updated = requests.patch(f"{api}/patients/{patient_id}", json={"phone": "+44 20 7946 0999"},
                             headers={**headers, "If-Match": read.headers["ETag"]}, timeout=10)
    assert updated.status_code == 200, updated.text
    assert updated.json()["phone"] == "+44 20 7946 0999"
    assert updated.headers["ETag"] != read.headers["ETag"]

    deleted = requests.delete(f"{api}/patients/{patient_id}",
                              headers={**headers, "If-Match": updated.headers["ETag"]}, timeout=10)
    assert deleted.status_code == 204, deleted.text
    gone = requests.get(f"{api}/patients/{patient_id}", headers=headers, timeout=10)
    assert gone.status_code == 404
    assert gone.headers["Content-Type"].startswith("application/problem+json")

    logout = requests.delete(f"{api}/auth/tokens/current", headers=headers, timeout=10)
    assert logout.status_code == 204, logout.text
    # Each request opens a new connection and may land on either worker: none may still accept
    # the revoked token.
    for _ in range(4):
        assert requests.get(f"{api}/users/me", headers=headers, timeout=10).status_code == 401
