"""Patients over the API: CRUD, scoping, search, pagination, concurrency control, audit."""
import pytest

from tests.conftest import patient_body

URL = "/api/v1/patients"


def get(client, staff, patient_id):
    return client.get(f"{URL}/{patient_id}", headers=staff.headers)


def search(client, staff, **criteria):
    return client.post(f"{URL}/search", json=criteria, headers=staff.headers)


def test_create_returns_201_with_location_etag_and_the_patient(client, provider):
    body = patient_body()
    response = client.post(URL, json=body, headers=provider.headers)
    assert response.status_code == 201
    created = response.get_json()
    assert response.headers["Location"] == f"{URL}/{created['id']}"
    assert response.headers["ETag"] == '"1"'
    assert created["provider_id"] == str(provider.id) and created["status"] == "active"
    assert {k: created[k] for k in body} == body


def test_phi_responses_are_not_cacheable(client, provider, create_patient):
    response = get(client, provider, create_patient(provider)["id"])
    assert response.headers["Cache-Control"] == "no-store"


def test_created_patients_name_mrn_and_email_appear_nowhere_in_a_raw_select(client, conn, provider):
    body = patient_body(first_name="Zebulon", last_name="Quixotic", email="zq@canary.example", mrn="CANARY-MRN-77")
    assert client.post(URL, json=body, headers=provider.headers).status_code == 201
    raw = " ".join(r[0] for r in conn.execute("SELECT row_to_json(p)::text FROM patients p"))
    raw_hex = " ".join(r[0] for r in conn.execute("SELECT encode(phi, 'escape') FROM patients"))
    for value in ("Zebulon", "Quixotic", "zq@canary.example", "CANARY-MRN-77"):
        assert value.lower() not in raw.lower() and value not in raw_hex


def test_provider_gets_404_for_another_providers_patient_by_id_search_and_list(client, make_staff, create_patient):
    provider_a, provider_b = make_staff("provider"), make_staff("provider")
    theirs = create_patient(provider_b, last_name="Hidden", email="hidden@example.org")
    assert get(client, provider_a, theirs["id"]).status_code == 404
    for criteria in ({"mrn": theirs["mrn"]}, {"email": "hidden@example.org"}, {"last_name": "Hidden"}):
        found = search(client, provider_a, **criteria)
        assert found.status_code == 200 and found.get_json()["items"] == []
    listed = client.get(URL, headers=provider_a.headers).get_json()
    assert theirs["id"] not in [p["id"] for p in listed]
    assert get(client, provider_b, theirs["id"]).status_code == 200


def test_admin_sees_every_providers_patients(client, admin, provider, create_patient):
    mine = create_patient(provider)
    assert get(client, admin, mine["id"]).status_code == 200
    assert mine["id"] in [p["id"] for p in client.get(URL, headers=admin.headers).get_json()]


def test_admin_creates_a_patient_for_a_named_provider(client, admin, provider):
    response = client.post(URL, json=patient_body(provider_id=str(provider.id)), headers=admin.headers)
    assert response.status_code == 201 and response.get_json()["provider_id"] == str(provider.id)
    missing = client.post(URL, json=patient_body(), headers=admin.headers)
    assert missing.status_code == 422 and missing.get_json()["field"] == "provider_id"
    not_a_provider = client.post(URL, json=patient_body(provider_id=str(admin.id)), headers=admin.headers)
    assert not_a_provider.status_code == 422


def test_auditor_gets_403_on_phi_routes_and_the_denial_is_audited(client, conn, make_staff, provider, create_patient):
    auditor = make_staff("auditor")
    patient = create_patient(provider)
    assert get(client, auditor, patient["id"]).status_code == 403
    assert client.get(URL, headers=auditor.headers).status_code == 403
    assert search(client, auditor, mrn="x").status_code == 403
    assert client.post(URL, json=patient_body(), headers=auditor.headers).status_code == 403
    denied = conn.execute("SELECT event_type, patient_id FROM audit_events WHERE actor_id = %s AND outcome = 'denied'",
                          (auditor.id,)).fetchall()
    assert ("access.denied", patient["id"]) in [(e, str(p) if p else None) for e, p in denied]
    assert len(denied) == 4


def test_duplicate_mrn_is_409_naming_the_field_without_echoing_the_value(client, provider, create_patient):
    first = create_patient(provider, mrn="DUP-12345")
    response = client.post(URL, json=patient_body(mrn="dup-12345"), headers=provider.headers)
    assert response.status_code == 409
    assert response.get_json()["field"] == "mrn"
    assert "DUP-12345".lower() not in response.get_data(as_text=True).lower()
    assert first["mrn"] == "DUP-12345"


def test_search_by_mrn_email_or_last_name_ignores_case_and_accents(client, provider, create_patient):
    patient = create_patient(provider, last_name="Müller", email="Anna.Muller@Example.org", mrn="AB-778")
    for criteria in ({"last_name": "muller"}, {"last_name": " MÜLLER "}, {"email": "anna.muller@example.org"},
                     {"mrn": "ab-778"}, {"last_name": "Muller", "mrn": "AB-778"}):
        response = search(client, provider, **criteria)
        assert response.status_code == 200, criteria
        assert [p["id"] for p in response.get_json()["items"]] == [patient["id"]], criteria
    assert search(client, provider, last_name="Miller").get_json()["items"] == []


def test_search_needs_a_criterion(client, provider):
    assert search(client, provider, status="active").status_code == 422


def test_list_filters_by_status_and_date_of_birth_range(client, provider, create_patient):
    old = create_patient(provider, date_of_birth="1940-03-01")
    young = create_patient(provider, date_of_birth="2001-06-15", status="inactive")
    same_year = create_patient(provider, date_of_birth="2001-01-02")

    def ids(query):
        response = client.get(f"{URL}?{query}", headers=provider.headers)
        assert response.status_code == 200
        return [p["id"] for p in response.get_json()]

    assert ids("status=inactive") == [young["id"]]
    assert ids("born_from=2001-03-01") == [young["id"]]
    assert ids("born_to=1950-12-31") == [old["id"]]
    assert ids("born_from=2001-01-01&born_to=2001-01-31") == [same_year["id"]]


def test_list_pages_with_a_cursor_in_the_link_header(client, provider, create_patient):
    created = [create_patient(provider)["id"] for _ in range(5)]
    seen, url = [], f"{URL}?limit=2"
    while url:
        response = client.get(url, headers=provider.headers)
        assert response.status_code == 200
        page = response.get_json()
        assert len(page) <= 2
        seen += [p["id"] for p in page]
        link = response.headers.get("Link")
        url = link[1:link.index(">")] if link else None
    assert sorted(seen) == sorted(created) and len(seen) == len(set(seen))


def test_search_pages_with_next_cursor(client, provider, create_patient):
    created = [create_patient(provider, last_name="Pager")["id"] for _ in range(3)]
    first = search(client, provider, last_name="pager", limit=2).get_json()
    second = search(client, provider, last_name="pager", limit=2, cursor=first["next_cursor"]).get_json()
    assert sorted(p["id"] for p in first["items"] + second["items"]) == sorted(created)
    assert second["next_cursor"] is None


def test_patch_requires_if_match(client, provider, create_patient):
    patient = create_patient(provider)
    response = client.patch(f"{URL}/{patient['id']}", json={"phone": "555"}, headers=provider.headers)
    assert response.status_code == 428


def test_patch_with_a_stale_etag_is_412_and_changes_nothing(client, provider, create_patient):
    patient = create_patient(provider)
    url = f"{URL}/{patient['id']}"
    assert client.patch(url, json={"phone": "1"}, headers={**provider.headers, "If-Match": '"1"'}).status_code == 200
    stale = client.patch(url, json={"phone": "2"}, headers={**provider.headers, "If-Match": '"1"'})
    assert stale.status_code == 412
    assert get(client, provider, patient["id"]).get_json()["phone"] == "1"


def test_patch_changes_fields_bumps_the_etag_and_null_clears_an_optional_field(client, provider, create_patient):
    patient = create_patient(provider)
    response = client.patch(f"{URL}/{patient['id']}", json={"last_name": "Byron", "notes": None, "status": "inactive"},
                            headers={**provider.headers, "If-Match": '"1"'})
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    updated = get(client, provider, patient["id"]).get_json()
    assert (updated["last_name"], updated["notes"], updated["status"]) == ("Byron", None, "inactive")
    assert updated["first_name"] == "Ada"
    assert search(client, provider, last_name="byron").get_json()["items"][0]["id"] == patient["id"]


@pytest.mark.parametrize("body", [{"id": "00000000-0000-0000-0000-000000000000"}, {"version": 7},
                                  {"provider_id": "00000000-0000-0000-0000-000000000000"},
                                  {"created_at": "2020-01-01T00:00:00Z"}, {"favourite_colour": "red"},
                                  {"first_name": None}, {}])
def test_patch_refuses_read_only_unknown_null_required_and_empty_bodies(client, provider, create_patient, body):
    patient = create_patient(provider)
    response = client.patch(f"{URL}/{patient['id']}", json=body, headers={**provider.headers, "If-Match": '"1"'})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"


def test_another_providers_patient_cannot_be_patched_or_deleted(client, make_staff, create_patient):
    owner, other = make_staff("provider"), make_staff("provider")
    patient = create_patient(owner)
    headers = {**other.headers, "If-Match": '"1"'}
    assert client.patch(f"{URL}/{patient['id']}", json={"phone": "1"}, headers=headers).status_code == 404
    assert client.delete(f"{URL}/{patient['id']}", headers=headers).status_code == 404
    assert get(client, owner, patient["id"]).get_json()["phone"] == patient["phone"]


def test_delete_is_a_soft_delete_and_reads_answer_404(client, conn, provider, create_patient):
    patient = create_patient(provider)
    url = f"{URL}/{patient['id']}"
    assert client.delete(url, headers=provider.headers).status_code == 428
    assert client.delete(url, headers={**provider.headers, "If-Match": '"9"'}).status_code == 412
    assert client.delete(url, headers={**provider.headers, "If-Match": '"1"'}).status_code == 204
    assert get(client, provider, patient["id"]).status_code == 404
    assert patient["id"] not in [p["id"] for p in client.get(URL, headers=provider.headers).get_json()]
    kept = conn.execute("SELECT deleted_at IS NOT NULL FROM patients WHERE id = %s", (patient["id"],)).fetchone()
    assert kept == (True,)


def test_every_phi_access_is_audited_with_field_names_never_values(client, conn, provider, create_patient):
    patient = create_patient(provider, last_name="Auditee")
    get(client, provider, patient["id"])
    search(client, provider, last_name="Auditee")
    client.patch(f"{URL}/{patient['id']}", json={"phone": "12"}, headers={**provider.headers, "If-Match": '"1"'})
    client.delete(f"{URL}/{patient['id']}", headers={**provider.headers, "If-Match": '"2"'})
    rows = conn.execute(
        "SELECT action, event_type, outcome, fields, request_id IS NOT NULL, row_to_json(a)::text"
        "  FROM audit_events a WHERE patient_id = %s OR patient_ids @> ARRAY[%s::uuid] ORDER BY id",
        (patient["id"], patient["id"])).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("C", "patient.create", "success"), ("R", "patient.read", "success"),
        ("R", "patient.search", "success"), ("U", "patient.update", "success"), ("D", "patient.delete", "success")]
    assert rows[2][3] == ["last_name"] and rows[3][3] == ["phone"]
    assert all(r[4] for r in rows)
    assert not any("Auditee" in r[5] or patient["mrn"] in r[5] for r in rows)


def test_a_list_page_is_one_audit_event_naming_every_patient_it_showed(client, conn, provider, create_patient, make_staff):
    created = [create_patient(provider)["id"] for _ in range(3)]
    response = client.get(f"{URL}?limit=2", headers=provider.headers)
    assert response.status_code == 200
    shown = [p["id"] for p in response.json]
    unlisted = (set(created) - set(shown)).pop()
    assert len(shown) == 2
    rows = conn.execute("SELECT action, event_type, patient_id, entity_id, patient_ids::text[], actor_id"
                        "  FROM audit_events WHERE event_type = 'patient.list'").fetchall()
    assert rows == [("R", "patient.list", None, None, shown, provider.id)]
    # An auditor asking for a listed patient's history finds the page's event.
    auditor = make_staff("auditor")
    for patient_id, listed in ((shown[0], True), (shown[1], True), (unlisted, False)):
        history = client.get(f"/api/v1/audit-events?patient_id={patient_id}", headers=auditor.headers).json
        assert any(e["event_type"] == "patient.list" and patient_id in e["patient_ids"] for e in history) is listed


def test_reading_a_missing_patient_is_404_and_audited(client, conn, provider):
    missing = "5f0c8f64-1c39-4a4e-9b7e-3c2f5b2f0a11"
    assert get(client, provider, missing).status_code == 404
    row = conn.execute("SELECT outcome FROM audit_events WHERE entity_id = %s", (missing,)).fetchone()
    assert row == ("denied",)


def test_a_conflict_found_by_the_database_is_still_audited(client, conn, provider, create_patient):
    create_patient(provider, mrn="AUDITED-DUP")
    assert client.post(URL, json=patient_body(mrn="AUDITED-DUP"), headers=provider.headers).status_code == 409
    outcomes = [r[0] for r in conn.execute(
        "SELECT outcome FROM audit_events WHERE event_type = 'patient.create' AND actor_id = %s ORDER BY id",
        (provider.id,))]
    assert outcomes == ["success", "failure"]
