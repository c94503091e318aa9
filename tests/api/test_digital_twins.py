"""Digital twins: a versioned configuration per patient, optimistic concurrency, validation, scope."""
import threading
import uuid

import psycopg
import pytest
from psycopg import errors as pg

from clarity import create_app
from clarity.repositories.digital_twins import DigitalTwinRepository
from clarity.queries import load
from clarity.security.access import Actor
from tests.conftest import APP_ROLE, make_settings, patient_body

CONFIG = {"model": {"name": "cardio-risk", "version": "1.4.0"},
          "parameters": {"resting_hr_baseline": 62, "bp_weight": 0.35},
          "enabled_signals": ["heart_rate", "bp_systolic", "bp_diastolic"]}


def twin_url(patient_id, suffix=""):
    return f"/api/v1/patients/{patient_id}/digital-twin{suffix}"


@pytest.fixture
def patient(provider, create_patient):
    return create_patient(provider)


def put(client, staff, patient_id, config=CONFIG, **headers):
    return client.put(twin_url(patient_id), json=config, headers={**staff.headers, **headers})


def with_version(n):
    return {**CONFIG, "parameters": {"revision": n}}


def test_the_first_put_creates_version_1_with_201_location_and_etag(client, provider, patient):
    response = put(client, provider, patient["id"])
    assert response.status_code == 201
    assert response.headers["Location"] == twin_url(patient["id"]) and response.headers["ETag"] == '"1"'
    body = response.get_json()
    assert {k: body[k] for k in CONFIG} == CONFIG
    assert (body["version"], body["patient_id"], body["created_by"]) == (1, patient["id"], str(provider.id))
    current = client.get(twin_url(patient["id"]), headers=provider.headers)
    assert current.status_code == 200 and current.headers["ETag"] == '"1"'
    assert {k: current.get_json()[k] for k in CONFIG} == CONFIG


def test_a_put_with_if_match_writes_the_next_version_and_keeps_the_old_ones(client, provider, patient):
    put(client, provider, patient["id"], with_version(1))
    second = put(client, provider, patient["id"], with_version(2), **{"If-Match": '"1"'})
    assert second.status_code == 200 and second.headers["ETag"] == '"2"'
    third = put(client, provider, patient["id"], with_version(3), **{"If-Match": '"2"'})
    assert third.headers["ETag"] == '"3"'
    assert client.get(twin_url(patient["id"]), headers=provider.headers).get_json()["parameters"] == {"revision": 3}
    versions = client.get(twin_url(patient["id"], "/versions"), headers=provider.headers).get_json()
    assert [(v["version"], v["parameters"]["revision"]) for v in versions] == [(3, 3), (2, 2), (1, 1)]


def test_a_put_without_if_match_when_a_twin_exists_is_428_and_changes_nothing(client, provider, patient):
    put(client, provider, patient["id"])
    response = put(client, provider, patient["id"], with_version(9))
    assert response.status_code == 428 and response.mimetype == "application/problem+json"
    assert client.get(twin_url(patient["id"]), headers=provider.headers).headers["ETag"] == '"1"'


@pytest.mark.parametrize("if_match", ['"1"', '"3"', '"0"', "*", "W/\"2\""])
def test_a_put_with_a_stale_or_unknown_if_match_is_412_and_changes_nothing(client, provider, patient, if_match):
    put(client, provider, patient["id"])
    put(client, provider, patient["id"], with_version(2), **{"If-Match": '"1"'})
    response = put(client, provider, patient["id"], with_version(99), **{"If-Match": if_match})
    assert response.status_code == 412
    versions = client.get(twin_url(patient["id"], "/versions"), headers=provider.headers).get_json()
    assert [v["version"] for v in versions] == [2, 1]


def test_if_match_before_any_twin_exists_is_412(client, provider, patient):
    assert put(client, provider, patient["id"], **{"If-Match": '"1"'}).status_code == 412
    assert client.get(twin_url(patient["id"]), headers=provider.headers).status_code == 404


def test_if_none_match_star_creates_the_first_version_only(client, provider, patient):
    assert put(client, provider, patient["id"], **{"If-None-Match": "*"}).status_code == 201
    assert put(client, provider, patient["id"], **{"If-None-Match": "*"}).status_code == 412
    assert put(client, provider, patient["id"], **{"If-None-Match": '"1"'}).status_code == 400


@pytest.mark.parametrize("config", [
    {**CONFIG, "colour": "blue"},
    {**CONFIG, "model": {**CONFIG["model"], "vendor": "acme"}},
    {**CONFIG, "model": {"name": "Cardio Risk", "version": "1.4.0"}},
    {**CONFIG, "model": {"name": "cardio-risk", "version": "1.4"}},
    {**CONFIG, "model": {"name": "cardio-risk", "version": "01.4.0"}},
    {**CONFIG, "parameters": {"hr": "62"}},
    {**CONFIG, "parameters": {"hr": True}},
    {**CONFIG, "parameters": {"hr": None}},
    {**CONFIG, "parameters": {"hr": 1e300}},
    {**CONFIG, "parameters": {"hr": 10 ** 30}},
    {**CONFIG, "parameters": {"Bad Name": 1}},
    {**CONFIG, "parameters": {f"p{n}": n for n in range(65)}},
    {**CONFIG, "enabled_signals": ["heart_rate", "mood"]},
    {**CONFIG, "enabled_signals": ["heart_rate", "heart_rate"]},
    {**CONFIG, "enabled_signals": "heart_rate"},
    {k: v for k, v in CONFIG.items() if k != "model"},
    {**CONFIG, "version": 7},
    {**CONFIG, "patient_id": str(uuid.uuid4())},
])
def test_invalid_configurations_are_422(client, provider, patient, config):
    response = put(client, provider, patient["id"], config)
    assert response.status_code == 422, config
    assert client.get(twin_url(patient["id"]), headers=provider.headers).status_code == 404


def test_nan_and_infinity_are_422(client, provider, patient):
    for literal in ("NaN", "Infinity", "-Infinity"):
        raw = ('{"model": {"name": "m", "version": "1.0.0"}, "enabled_signals": [], '
               f'"parameters": {{"x": {literal}}}}}')
        response = client.put(twin_url(patient["id"]), data=raw, content_type="application/json",
                              headers=provider.headers)
        assert response.status_code == 422, literal


def test_versions_page_newest_first_with_a_link_header(client, provider, patient):
    put(client, provider, patient["id"], with_version(1))
    for n in range(2, 6):
        put(client, provider, patient["id"], with_version(n), **{"If-Match": f'"{n - 1}"'})
    seen, url = [], twin_url(patient["id"], "/versions?limit=2")
    while url:
        response = client.get(url, headers=provider.headers)
        assert response.status_code == 200 and len(response.get_json()) <= 2
        seen += [v["version"] for v in response.get_json()]
        link = response.headers.get("Link")
        url = link[1:link.index(">")] if link else None
    assert seen == [5, 4, 3, 2, 1]


def test_a_patient_without_a_twin_is_404_and_lists_no_versions(client, provider, patient):
    assert client.get(twin_url(patient["id"]), headers=provider.headers).status_code == 404
    versions = client.get(twin_url(patient["id"], "/versions"), headers=provider.headers)
    assert versions.status_code == 200 and versions.get_json() == []


def test_another_providers_patients_twin_is_404_and_an_auditor_gets_403(client, make_staff, provider, patient):
    put(client, provider, patient["id"])
    stranger, auditor = make_staff("provider"), make_staff("auditor")
    for staff, status in ((stranger, 404), (auditor, 403)):
        assert client.get(twin_url(patient["id"]), headers=staff.headers).status_code == status
        assert client.get(twin_url(patient["id"], "/versions"), headers=staff.headers).status_code == status
        assert put(client, staff, patient["id"], **{"If-Match": '"1"'}).status_code == status
    assert client.get(twin_url(patient["id"]), headers=provider.headers).headers["ETag"] == '"1"'


def test_reads_and_writes_are_audited_with_field_names_and_denials_too(client, conn, make_staff, provider, patient):
    put(client, provider, patient["id"])
    client.get(twin_url(patient["id"]), headers=provider.headers)
    auditor = make_staff("auditor")
    client.get(twin_url(patient["id"]), headers=auditor.headers)
    rows = conn.execute("SELECT actor_id, action, event_type, outcome, patient_id, fields FROM audit_events "
                        "WHERE entity_type IN ('digital_twin', 'digital_twins') AND actor_id IN (%s, %s) ORDER BY id",
                        (provider.id, auditor.id)).fetchall()
    assert [(a, e, o) for _, a, e, o, *_ in rows] == [("C", "digital_twin.create", "success"),
                                                      ("R", "digital_twin.read", "success"),
                                                      ("R", "access.denied", "denied")]
    assert all(str(r[4]) == patient["id"] for r in rows)
    assert sorted(rows[0][5]) == ["enabled_signals", "model", "parameters"]
    assert "cardio-risk" not in str(rows)


def test_versions_are_append_only_for_the_app_role(conn, client, provider, patient, admin):
    put(client, provider, patient["id"])
    conn.execute("SELECT set_config('clarity.actor_id', %s, true), set_config('clarity.actor_role', 'admin', true)",
                 (str(admin.id),))
    for statement in ("UPDATE digital_twin_versions SET config = '{}' WHERE patient_id = %(id)s",
                      "DELETE FROM digital_twin_versions WHERE patient_id = %(id)s",
                      "TRUNCATE digital_twin_versions"):
        with pytest.raises(pg.InsufficientPrivilege), conn.transaction():
            conn.execute(statement, {"id": patient["id"]})


def test_concurrent_writers_of_the_same_version_one_wins_the_other_is_told_stale(server, fresh_database, keyring):
    """Two transactions both write version 2: the second blocks on the primary key until the
    first commits, then is refused (-> 412); exactly one version 2 exists, nothing is lost."""
    db = create_app(make_settings(server, fresh_database), keyring=keyring).extensions["clarity"].db
    try:
        user = db.run(lambda uow: uow.users.add(email="twin@clarity.test", display_name="T", role="provider",
                                                password_hash="x"))
        actor = Actor(id=user.id, role="provider")
        patient = db.run(lambda uow: uow.patients.add(provider_id=user.id, status="active", phi=patient_body()),
                         actor=actor)
        db.run(lambda uow: uow.digital_twins.add(patient.id, 1, CONFIG, created_by=user.id), actor=actor)
    finally:
        db.close()
    queries = load().digital_twins

    def writer():
        conn = psycopg.connect(server.url(fresh_database, APP_ROLE))
        conn.execute("SELECT set_config('clarity.actor_id', %s, true), "
                     "set_config('clarity.actor_role', 'provider', true)", (str(user.id),))
        return conn, DigitalTwinRepository(conn, queries)

    first_conn, first = writer()
    second_conn, second = writer()
    results = {}
    try:
        assert first.add(patient.id, 2, with_version(101), created_by=user.id).version == 2
        thread = threading.Thread(target=lambda: results.setdefault(
            "second", second.add(patient.id, 2, with_version(202), created_by=user.id)))
        thread.start()
        thread.join(0.3)
        assert thread.is_alive()  # waiting on the first writer's uncommitted version 2
        first_conn.commit()
        thread.join(5)
        assert results == {"second": None}
    finally:
        second_conn.close()
        first_conn.close()
    with psycopg.connect(server.url(fresh_database)) as owner:
        rows = owner.execute("SELECT version, config->'parameters'->>'revision' FROM digital_twin_versions "
                             "ORDER BY version").fetchall()
    assert rows == [(1, None), (2, "101")]
