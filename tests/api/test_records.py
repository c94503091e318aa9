"""Medical records: typed bodies kept enciphered, append-only, amendment chains, scoping, audit."""
import uuid

import psycopg
import pytest
from psycopg import errors as pg

from clarity.errors import DecryptionError
from clarity.security.access import Actor

BODIES = {
    "note": {"text": "Seen in clinic.\nComplains of\tfatigue; advised rest."},
    "diagnosis": {"code": "E11.9", "description": "Type 2 diabetes mellitus without complications"},
    "prescription": {"medication": "Metformin", "dose": "500 mg", "route": "oral", "frequency": "twice daily",
                     "duration_days": 90},
    "lab_result": {"test": "HbA1c", "value": 7.2, "unit": "%", "reference_range": "4.0-5.6", "flag": "high"},
}


def records_url(patient_id):
    return f"/api/v1/patients/{patient_id}/records"


@pytest.fixture
def patient(provider, create_patient):
    return create_patient(provider)


@pytest.fixture
def add(client):
    """POST a record as ``staff`` and return the response JSON (asserting 201)."""
    def add(staff, patient_id, type="note", body=None, **extra):
        response = client.post(records_url(patient_id), headers=staff.headers,
                               json={"type": type, "body": body or BODIES[type], **extra})
        assert response.status_code == 201, response.get_json()
        return response.get_json()
    return add


def get(client, staff, record_id):
    return client.get(f"/api/v1/records/{record_id}", headers=staff.headers)


def act_as(conn, actor_id, role):
    conn.execute("SELECT set_config('clarity.actor_id', %s, true), set_config('clarity.actor_role', %s, true)",
                 (str(actor_id), role))


@pytest.mark.parametrize("type", sorted(BODIES))
def test_each_type_is_created_with_location_and_reads_back_with_its_body_and_author(client, provider, patient, type):
    response = client.post(records_url(patient["id"]), json={"type": type, "body": BODIES[type]},
                           headers=provider.headers)
    assert response.status_code == 201
    created = response.get_json()
    assert response.headers["Location"] == f"/api/v1/records/{created['id']}"
    read = get(client, provider, created["id"])
    assert read.status_code == 200 and read.headers["Cache-Control"] == "no-store"
    record = read.get_json()
    assert (record["type"], record["body"], record["author_id"], record["patient_id"]) == (
        type, BODIES[type], str(provider.id), patient["id"])
    assert record["amends_id"] is None and record["superseded_by"] is None
    assert [r["id"] for r in record["chain"]] == [created["id"]]


def test_an_admin_records_for_any_patient_and_is_the_author(client, admin, patient, add):
    created = add(admin, patient["id"], "diagnosis")
    assert created["author_id"] == str(admin.id)


def test_optional_fields_may_be_left_out_and_a_lab_value_may_be_qualitative(add, provider, patient):
    prescription = {k: v for k, v in BODIES["prescription"].items() if k != "duration_days"}
    assert add(provider, patient["id"], "prescription", prescription)["body"] == prescription
    qualitative = {"test": "SARS-CoV-2 PCR", "value": "not detected", "unit": "n/a"}
    assert add(provider, patient["id"], "lab_result", qualitative)["body"] == qualitative


@pytest.mark.parametrize("payload", [
    {"type": "note", "body": {}},
    {"type": "note", "body": {"text": ""}},
    {"type": "note", "body": {"text": "x" * 10_001}},
    {"type": "note", "body": {"text": "nul\x00byte"}},
    {"type": "note", "body": {"text": "ok", "secret_field": "x"}},
    {"type": "note", "body": BODIES["diagnosis"]},
    {"type": "diagnosis", "body": {"code": "not-icd", "description": "x"}},
    {"type": "diagnosis", "body": {"code": "e11.9", "description": "lower case code"}},
    {"type": "diagnosis", "body": {"code": "E11.9"}},
    {"type": "prescription", "body": {**BODIES["prescription"], "route": "telepathic"}},
    {"type": "prescription", "body": {**BODIES["prescription"], "duration_days": 0}},
    {"type": "prescription", "body": {**BODIES["prescription"], "duration_days": "90"}},
    {"type": "lab_result", "body": {**BODIES["lab_result"], "value": True}},
    {"type": "lab_result", "body": {**BODIES["lab_result"], "value": 1e300}},
    {"type": "lab_result", "body": {**BODIES["lab_result"], "value": None}},
    {"type": "lab_result", "body": {**BODIES["lab_result"], "flag": "meh"}},
    {"type": "lab_result", "body": {k: v for k, v in BODIES["lab_result"].items() if k != "unit"}},
    {"type": "vital_sign", "body": {"text": "x"}},
    {"type": "note", "body": "just a string"},
    {"type": "note"},
    {"type": "note", "body": BODIES["note"], "recorded_at": "2999-01-01T00:00:00Z"},
    {"type": "note", "body": BODIES["note"], "recorded_at": "2024-01-01T10:00:00"},
    {"type": "note", "body": BODIES["note"], "author_id": str(uuid.uuid4())},
    {"type": "note", "body": BODIES["note"], "id": str(uuid.uuid4())},
])
def test_bad_bodies_and_read_only_or_unknown_fields_are_422(client, provider, patient, payload):
    response = client.post(records_url(patient["id"]), json=payload, headers=provider.headers)
    assert response.status_code == 422, payload
    assert response.mimetype == "application/problem+json"


def test_a_given_recorded_at_is_kept_and_the_list_is_newest_recorded_first(client, provider, patient, add):
    old = add(provider, patient["id"], recorded_at="2020-05-01T08:00:00+00:00")
    new = add(provider, patient["id"])
    middle = add(provider, patient["id"], "lab_result", recorded_at="2023-01-01T12:00:00+02:00")
    listed = client.get(records_url(patient["id"]), headers=provider.headers).get_json()
    assert [r["id"] for r in listed] == [new["id"], middle["id"], old["id"]]
    assert listed[2]["recorded_at"].startswith("2020-05-01T08:00:00")


def test_the_list_filters_by_type_and_pages_with_a_cursor(client, provider, patient, add):
    notes = [add(provider, patient["id"], recorded_at=f"2024-01-0{day}T09:00:00Z")["id"] for day in range(1, 6)]
    add(provider, patient["id"], "diagnosis")
    seen, url = [], f"{records_url(patient['id'])}?type=note&limit=2"
    while url:
        response = client.get(url, headers=provider.headers)
        assert response.status_code == 200 and len(response.get_json()) <= 2
        seen += [r["id"] for r in response.get_json()]
        link = response.headers.get("Link")
        url = link[1:link.index(">")] if link else None
    assert seen == notes[::-1]
    assert client.get(f"{records_url(patient['id'])}?type=vital", headers=provider.headers).status_code == 422


def test_a_body_never_appears_in_a_raw_select_of_the_table(client, conn, provider, patient, add):
    add(provider, patient["id"], "note", {"text": "Canary-Zanzibar-4417 disclosed"})
    add(provider, patient["id"], "diagnosis", {"code": "F32.1", "description": "Canary-Quokka episode"})
    act_as(conn, provider.id, "provider")
    raw = " ".join(r[0] for r in conn.execute("SELECT row_to_json(r)::text FROM medical_records r"))
    raw_bytes = b" ".join(bytes(r[0]) for r in conn.execute("SELECT body FROM medical_records"))
    assert raw  # the rows are there, as ciphertext
    for value in ("Canary-Zanzibar-4417", "Canary-Quokka", "F32.1"):
        assert value.lower() not in raw.lower() and value.encode() not in raw_bytes


def test_an_envelope_copied_to_another_record_fails_to_decrypt_with_a_clear_error(client, conn, db, provider, patient,
                                                                                   add):
    original = add(provider, patient["id"], "note", {"text": "Confidential detail"})
    act_as(conn, provider.id, "provider")
    copy_id = conn.execute(
        "INSERT INTO medical_records (patient_id, type, body, body_key_id, author_id) "
        "SELECT patient_id, type, body, body_key_id, author_id FROM medical_records WHERE id = %s RETURNING id",
        (original["id"],)).fetchone()[0]
    actor = Actor(id=provider.id, role="provider")
    with pytest.raises(DecryptionError, match="copied from another row"):
        db.run(lambda uow: uow.records.get_chain(copy_id, actor), actor=actor)
    response = get(client, provider, copy_id)
    assert response.status_code == 500 and "Confidential" not in response.get_data(as_text=True)
    assert get(client, provider, original["id"]).get_json()["body"] == {"text": "Confidential detail"}


def test_the_app_role_cannot_update_delete_or_truncate_records(conn, provider, patient, add, admin):
    record = add(provider, patient["id"])
    act_as(conn, admin.id, "admin")
    for statement in ("UPDATE medical_records SET type = 'diagnosis' WHERE id = %(id)s",
                      "UPDATE medical_records SET recorded_at = now() WHERE id = %(id)s",
                      "UPDATE medical_records SET body = body || '\\x00'::bytea WHERE id = %(id)s",
                      "DELETE FROM medical_records WHERE id = %(id)s",
                      "TRUNCATE medical_records"):
        with pytest.raises(pg.InsufficientPrivilege), conn.transaction():
            conn.execute(statement, {"id": record["id"]})
    assert conn.execute("SELECT type FROM medical_records WHERE id = %s", (record["id"],)).fetchone() == ("note",)


def test_records_refuse_update_delete_and_truncate_even_for_the_owner_except_a_re_encipherment(server, test_database):
    with psycopg.connect(server.url(test_database), autocommit=True) as owner, owner.transaction(force_rollback=True):
        user_id = owner.execute("INSERT INTO users (email, display_name, role, password_hash) "
                                "VALUES ('owner-test@clarity.test', 'O', 'provider', 'x') RETURNING id").fetchone()[0]
        patient_id = owner.execute(
            "INSERT INTO patients (provider_id, birth_year, mrn_bidx, last_name_bidx, phi, phi_key_id) "
            "VALUES (%s, 1980, %s, %s, '\\x00', 'k') RETURNING id", (user_id, bytes(32), bytes(32))).fetchone()[0]
        record_id = owner.execute(
            "INSERT INTO medical_records (patient_id, type, body, body_key_id, author_id) "
            "VALUES (%s, 'note', %s, 'k1', %s) RETURNING id", (patient_id, bytes(40), user_id)).fetchone()[0]
        for statement in ("UPDATE medical_records SET type = 'diagnosis' WHERE id = %(id)s",
                          "UPDATE medical_records SET body = %(body)s WHERE id = %(id)s",
                          "UPDATE medical_records SET body = %(body)s, body_key_id = 'k2', "
                          "recorded_at = now() - interval '1 day' WHERE id = %(id)s",
                          "DELETE FROM medical_records WHERE id = %(id)s",
                          "TRUNCATE medical_records"):
            with pytest.raises(pg.InsufficientPrivilege, match="append-only"), owner.transaction():
                owner.execute(statement, {"id": record_id, "body": bytes(41)})
        # What key rotation does: a new envelope under another key, nothing else changed.
        assert owner.execute("UPDATE medical_records SET body = %s, body_key_id = 'k2' WHERE id = %s",
                             (bytes(41), record_id)).rowcount == 1


def test_an_amendment_chain_of_three_reads_back_in_order_from_any_record_in_it(client, provider, patient, add):
    first = add(provider, patient["id"], "diagnosis", {"code": "I10", "description": "Hypertension"})
    second = add(provider, patient["id"], "diagnosis", {"code": "I11.9", "description": "Hypertensive heart disease"},
                 amends_id=first["id"])
    third = add(provider, patient["id"], "diagnosis", {"code": "I11.0", "description": "With heart failure"},
                amends_id=second["id"])
    unrelated = add(provider, patient["id"], "diagnosis")
    ids = [first["id"], second["id"], third["id"]]
    for record_id in ids:
        record = get(client, provider, record_id).get_json()
        assert record["id"] == record_id
        assert [r["id"] for r in record["chain"]] == ids
        assert [r["superseded_by"] for r in record["chain"]] == [second["id"], third["id"], None]
        assert [r["amends_id"] for r in record["chain"]] == [None, first["id"], second["id"]]
        assert [r["body"]["code"] for r in record["chain"]] == ["I10", "I11.9", "I11.0"]
    listed = client.get(records_url(patient["id"]), headers=provider.headers).get_json()
    listed = {r["id"]: r["superseded_by"] for r in listed}
    assert listed == {first["id"]: second["id"], second["id"]: third["id"], third["id"]: None, unrelated["id"]: None}
    current = client.get(f"{records_url(patient['id'])}?current=true", headers=provider.headers).get_json()
    assert sorted(r["id"] for r in current) == sorted([third["id"], unrelated["id"]])


def test_a_record_is_amended_once_a_second_amendment_is_409_naming_amends_id(client, provider, patient, add):
    first = add(provider, patient["id"])
    add(provider, patient["id"], amends_id=first["id"])
    again = client.post(records_url(patient["id"]), headers=provider.headers,
                        json={"type": "note", "body": BODIES["note"], "amends_id": first["id"]})
    assert again.status_code == 409 and again.get_json()["field"] == "amends_id"


def test_amending_a_record_of_another_patient_or_type_is_refused_by_the_database(client, conn, provider, create_patient,
                                                                                 patient, add):
    other_patient = create_patient(provider)
    theirs = add(provider, other_patient["id"])
    for payload in ({"type": "note", "body": BODIES["note"], "amends_id": theirs["id"]},
                    {"type": "diagnosis", "body": BODIES["diagnosis"], "amends_id": add(provider, patient["id"])["id"]},
                    {"type": "note", "body": BODIES["note"], "amends_id": str(uuid.uuid4())}):
        response = client.post(records_url(patient["id"]), json=payload, headers=provider.headers)
        assert response.status_code == 422 and response.get_json()["field"] == "amends_id", payload
    act_as(conn, provider.id, "provider")
    with pytest.raises(pg.ForeignKeyViolation), conn.transaction():
        conn.execute("INSERT INTO medical_records (patient_id, type, body, body_key_id, author_id, amends_id) "
                     "VALUES (%s, 'note', %s, 'test1', %s, %s)", (patient["id"], bytes(40), provider.id, theirs["id"]))
    assert get(client, provider, theirs["id"]).get_json()["superseded_by"] is None


def test_amending_an_amended_record_out_of_sight_is_422_like_a_missing_one_not_409(client, make_staff, create_patient,
                                                                                   patient, provider, add):
    stranger = make_staff("provider")
    hidden_patient = create_patient(stranger)
    hidden = add(stranger, hidden_patient["id"])
    add(stranger, hidden_patient["id"], amends_id=hidden["id"])
    response = client.post(records_url(patient["id"]), headers=provider.headers,
                           json={"type": "note", "body": BODIES["note"], "amends_id": hidden["id"]})
    assert response.status_code == 422 and response.get_json()["field"] == "amends_id"


def test_another_providers_patients_records_are_404_and_an_auditor_gets_403(client, conn, make_staff, patient, provider,
                                                                            add):
    record = add(provider, patient["id"])
    stranger, auditor = make_staff("provider"), make_staff("auditor")
    for staff, status in ((stranger, 404), (auditor, 403)):
        assert client.get(records_url(patient["id"]), headers=staff.headers).status_code == status
        assert get(client, staff, record["id"]).status_code == status
        assert client.post(records_url(patient["id"]), json={"type": "note", "body": BODIES["note"]},
                           headers=staff.headers).status_code == status
    assert get(client, stranger, uuid.uuid4()).status_code == 404
    denied = conn.execute("SELECT actor_id, event_type FROM audit_events WHERE outcome = 'denied' "
                          "AND entity_type IN ('medical_record', 'records') AND actor_id IN (%s, %s)",
                          (stranger.id, auditor.id)).fetchall()
    assert len(denied) == 7
    assert len(client.get(records_url(patient["id"]), headers=provider.headers).get_json()) == 1


def test_row_level_security_shows_a_provider_only_their_patients_records(conn, make_staff, create_patient, add):
    mine, theirs = make_staff("provider"), make_staff("provider")
    own = add(mine, create_patient(mine)["id"])
    add(theirs, create_patient(theirs)["id"])
    act_as(conn, mine.id, "provider")
    assert {str(r[0]) for r in conn.execute("SELECT id FROM medical_records")} == {own["id"]}
    act_as(conn, uuid.uuid4(), "auditor")
    assert conn.execute("SELECT count(*) FROM medical_records").fetchone() == (0,)


def test_an_emergency_grant_opens_the_records_and_the_reads_are_audited_as_emergency(client, conn, make_staff,
                                                                                     create_patient, add):
    owner, responder = make_staff("provider"), make_staff("provider")
    patient = create_patient(owner)
    record = add(owner, patient["id"])
    assert get(client, responder, record["id"]).status_code == 404
    client.post(f"/api/v1/patients/{patient['id']}/emergency-access", headers=responder.headers,
                json={"reason": "Unconscious in the emergency department"})
    assert get(client, responder, record["id"]).status_code == 200
    events = {r[0] for r in conn.execute(
        "SELECT event_type FROM audit_events WHERE actor_id = %s AND outcome = 'success'", (responder.id,))}
    assert "medical_record.emergency_read" in events


def test_creates_and_reads_are_audited_with_body_field_names_never_values(client, conn, provider, patient, add):
    record = add(provider, patient["id"], "lab_result")
    get(client, provider, record["id"])
    client.get(records_url(patient["id"]), headers=provider.headers)
    rows = conn.execute("SELECT action, event_type, entity_id, patient_id, fields FROM audit_events "
                        "WHERE actor_id = %s AND entity_type = 'medical_record' ORDER BY id", (provider.id,)).fetchall()
    assert [(a, e) for a, e, *_ in rows] == [("C", "medical_record.create"), ("R", "medical_record.read"),
                                            ("R", "medical_record.list"), ("R", "medical_record.read")]
    for action, event_type, entity_id, patient_id, fields in rows:
        assert str(patient_id) == patient["id"]
        if event_type != "medical_record.list":
            assert entity_id == record["id"] and sorted(fields) == sorted(BODIES["lab_result"])
    assert "HbA1c" not in str(rows) and "7.2" not in str(rows)
