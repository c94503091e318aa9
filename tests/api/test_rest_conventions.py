"""Hostile and malformed input gets a clear 4xx problem+json, never a 500; OpenAPI is served."""
import uuid

import pytest

from tests.conftest import patient_body

URL = "/api/v1/patients"


def assert_problem(response, status):
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["request_id"] and body["title"]
    return body


def test_malformed_json_is_400(client, provider):
    response = client.post(URL, data='{"first_name": "Ada",', content_type="application/json", headers=provider.headers)
    assert_problem(response, 400)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_wrong_content_type_is_415(client, provider, content_type):
    response = client.post(URL, data="first_name=Ada", content_type=content_type, headers=provider.headers)
    assert_problem(response, 415)


def test_unknown_fields_are_422_naming_them(client, provider):
    body = assert_problem(client.post(URL, json=patient_body(is_vip=True), headers=provider.headers), 422)
    assert "is_vip" in body["errors"]["json"]


@pytest.mark.parametrize("field", ["id", "version", "created_at"])
def test_read_only_fields_are_422_on_create(client, provider, field):
    assert_problem(client.post(URL, json=patient_body(**{field: "1"}), headers=provider.headers), 422)


def test_nul_bytes_are_422(client, provider):
    assert_problem(client.post(URL, json=patient_body(first_name="Ada\x00"), headers=provider.headers), 422)
    assert_problem(client.post(f"{URL}/search", json={"mrn": "\x00"}, headers=provider.headers), 422)


def test_a_one_megabyte_string_is_4xx(client, provider):
    response = client.post(URL, json=patient_body(notes="x" * 1_000_000), headers=provider.headers)
    assert 400 <= response.status_code < 500 and response.mimetype == "application/problem+json"


def test_a_body_over_the_size_limit_is_413(client, provider):
    response = client.post(URL, json=patient_body(notes="x" * 5_000_000), headers=provider.headers)
    assert_problem(response, 413)


@pytest.mark.parametrize("query", ["limit=1000000000", "limit=1000000000000000000000000000000", "limit=-1",
                                   "limit=abc", "born_from=1985-13-45", "status=zombie", "cursor=%00%00"])
def test_hostile_query_parameters_are_4xx(client, provider, query):
    response = client.get(f"{URL}?{query}", headers=provider.headers)
    assert 400 <= response.status_code < 500
    assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize("limit", [10**30, 10**9, -5, 1.5, "9" * 400])
def test_hostile_numbers_in_a_body_are_422(client, provider, limit):
    assert_problem(client.post(f"{URL}/search", json={"mrn": "x", "limit": limit}, headers=provider.headers), 422)


def test_a_forged_cursor_is_400(client, provider):
    assert_problem(client.get(f"{URL}?cursor=bm90LWEtY3Vyc29y", headers=provider.headers), 400)


@pytest.mark.parametrize("if_match, status", [('"99999999999999999999"', 412), ('W/"1"', 412), ("*", 412),
                                              ('"1", "2"', 412), ("1", 400), ("qJ{", 400), ('"1', 400)])
def test_odd_if_match_values_are_412_or_400_when_not_an_entity_tag_never_500(client, provider, create_patient,
                                                                            if_match, status):
    patient = create_patient(provider)
    response = client.patch(f"{URL}/{patient['id']}", json={"phone": "1"}, headers={**provider.headers, "If-Match": if_match})
    assert_problem(response, status)


def test_a_well_formed_if_match_on_a_missing_patient_is_404_not_412(client, provider):
    response = client.delete(f"{URL}/{uuid.uuid4()}", headers={**provider.headers, "If-Match": 'W/"x"'})
    assert_problem(response, 404)


def test_a_non_uuid_id_is_404(client, provider):
    assert_problem(client.get(f"{URL}/not-a-uuid", headers=provider.headers), 404)


def test_a_future_date_of_birth_is_422(client, provider):
    assert_problem(client.post(URL, json=patient_body(date_of_birth="2999-01-01"), headers=provider.headers), 422)


def test_request_id_is_echoed_and_generated(client):
    response = client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    generated = client.get("/health/live", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["X-Request-ID"] != "bad id with spaces" and len(generated.headers["X-Request-ID"]) == 32


def test_method_not_allowed_is_problem_json(client, provider):
    assert_problem(client.put(URL, json={}, headers=provider.headers), 405)


def test_openapi_document_and_docs_page_are_served(client):
    spec = client.get("/api/v1/openapi.json")
    assert spec.status_code == 200
    paths = spec.get_json()["paths"]
    assert {"/api/v1/patients", "/api/v1/patients/search", "/api/v1/patients/{patient_id}",
            "/api/v1/auth/tokens", "/api/v1/users", "/api/v1/users/me"} <= set(paths)
    assert client.get("/api/v1/docs").status_code == 200


def test_no_route_takes_phi_in_its_url_or_query_string(client):
    """Walk the OpenAPI document: path parameters are ids, query parameters are never PHI."""
    phi_names = {"first_name", "last_name", "name", "mrn", "ssn", "email", "phone", "date_of_birth", "dob",
                 "address", "notes", "reason", "password", "token"}
    checked = 0
    for path, item in client.get("/api/v1/openapi.json").get_json()["paths"].items():
        operations = [op for op in item.values() if isinstance(op, dict)]
        parameters = list(item.get("parameters", [])) + [p for op in operations for p in op.get("parameters", [])]
        for param in parameters:
            checked += 1
            if param["in"] == "path":
                # An id, or a closed vocabulary (an enum, e.g. a kind of reading): never free text.
                schema = param["schema"]
                assert (param["name"].endswith("_id") and schema.get("format") == "uuid") or schema.get("enum"), path
            elif param["in"] == "query":
                assert param["name"] not in phi_names, (path, param["name"])
    assert checked > 10


@pytest.mark.parametrize("path", ["/api/v1/patients?last_nam=x", "/api/v1/users?limt=5", "/api/v1/emergency-access?activ=1"])
def test_unknown_query_parameters_are_422_not_ignored(client, admin, path):
    assert_problem(client.get(path, headers=admin.headers), 422)


def test_the_openapi_document_is_rendered_once_and_served_from_the_cache(app, client):
    cache = app.extensions["clarity"].cache
    cache.clear()
    first = client.get("/api/v1/openapi.json")
    assert cache.get("openapi.json") is not None
    second = client.get("/api/v1/openapi.json")
    assert second.get_data() == first.get_data() and second.mimetype == "application/json"
    assert second.headers["X-Request-ID"] != first.headers["X-Request-ID"]
