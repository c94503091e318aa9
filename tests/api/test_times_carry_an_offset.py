"""One rule for every time a client sends, in a query string or a body: it carries an offset.
A time without one is 422 naming the field, on every route, never read as UTC or server time."""
from __future__ import annotations

import pytest

from clarity.api.common import OFFSET_REQUIRED

WITHOUT_OFFSET = "2030-05-01T09:00:00"
QUERIES = {  # route (patient id as {}) -> role that may call it
    "/api/v1/audit-events": "auditor",
    "/api/v1/patients/{}/biometrics": "provider",
    "/api/v1/patients/{}/biometrics/summary": "provider",
    "/api/v1/patients/{}/appointments": "provider",
    "/api/v1/appointments": "provider",
}


@pytest.fixture
def staff(make_staff):
    return {role: make_staff(role) for role in ("provider", "auditor")}


@pytest.fixture
def patient(staff, create_patient):
    return create_patient(staff["provider"])["id"]


def refused_field(response) -> dict:
    assert response.status_code == 422, response.get_json()
    assert response.mimetype == "application/problem+json"
    return response.get_json()["errors"]


@pytest.mark.parametrize("route", QUERIES)
@pytest.mark.parametrize("name", ["from", "to"])
def test_a_time_filter_without_an_offset_is_422_naming_it_on_every_route(client, staff, patient, route, name):
    response = client.get(route.format(patient), query_string={name: WITHOUT_OFFSET},
                          headers=staff[QUERIES[route]].headers)

    assert refused_field(response) == {"query": {name: [OFFSET_REQUIRED]}}


@pytest.mark.parametrize("route", QUERIES)
def test_the_same_time_with_an_offset_is_accepted_on_every_route(client, staff, patient, route):
    response = client.get(route.format(patient), query_string={"from": WITHOUT_OFFSET + "Z",
                                                               "to": "2030-05-02T09:00:00+00:00"},
                          headers=staff[QUERIES[route]].headers)

    assert response.status_code == 200, response.get_json()


def test_an_unencoded_plus_in_a_query_string_is_422_with_the_hint(client, staff):
    # "+" in a query string is a space, so "+02:00" arrives as " 02:00": not a time.
    response = client.get(f"/api/v1/audit-events?from={WITHOUT_OFFSET}+02:00", headers=staff["auditor"].headers)

    assert refused_field(response) == {"query": {"from": [OFFSET_REQUIRED]}}
    assert "%2B" in OFFSET_REQUIRED


def test_a_record_time_without_an_offset_is_422_naming_it(client, staff, patient):
    response = client.post(f"/api/v1/patients/{patient}/records", headers=staff["provider"].headers,
                           json={"type": "note", "body": {"text": "Seen."}, "recorded_at": "2020-05-01T09:00:00"})

    assert refused_field(response) == {"json": {"recorded_at": [OFFSET_REQUIRED]}}


def test_a_reading_time_without_an_offset_is_422_with_the_same_message(client, staff, patient):
    reading = {"kind": "heart_rate", "value": 72, "unit": "bpm", "recorded_at": "2020-05-01T09:00:00",
               "source_device": "watch-1"}
    response = client.post(f"/api/v1/patients/{patient}/biometrics", json=reading, headers=staff["provider"].headers)

    assert response.status_code == 422
    assert response.get_json()["field"] == "recorded_at" and response.get_json()["detail"] == OFFSET_REQUIRED
