"""Idempotent writes with the Idempotency-Key header: a retry is answered as the first request
was, byte for byte, and does nothing twice; a key is its principal's; failed requests leave no
key; expired keys are purged."""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
import uuid

import psycopg
import pytest
from flask import request

from clarity import audit_chain, config, create_app, idempotency
from clarity.api import idempotency as api_idempotency
from clarity.api.common import run
from clarity.audit import CREATE, AuditEvent
from clarity.config import ConfigError
from clarity.db import UnitOfWork
from clarity.repositories.audit import AuditRepository
from clarity.security.access import new_token
from tests.conftest import APP_ROLE, Staff, checked, make_settings, patient_body, statements_run

START = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
# What every answer gets per request, replay or not.
PER_REQUEST = {"X-Request-ID", "Idempotent-Replayed"}
UPLOAD_LIMIT = 8 * 1024 * 1024


def slot(hours: float = 0) -> dict:
    starts_at = START + dt.timedelta(hours=hours)
    return {"starts_at": starts_at.isoformat(), "ends_at": (starts_at + dt.timedelta(minutes=30)).isoformat()}


def keyed(staff, key: str) -> dict:
    return {**staff.headers, "Idempotency-Key": key}


def new_key() -> str:
    return f'"{uuid.uuid4()}"'


def act_as(conn, actor_id, role="admin") -> None:
    conn.execute("SELECT set_config('clarity.actor_id', %s, true), set_config('clarity.actor_role', %s, true)",
                 (str(actor_id), role))


def count(conn, sql: str, *params) -> int:
    """A count in an admin's transaction (row-level security shows every patient's rows)."""
    act_as(conn, uuid.uuid4())
    return conn.execute(sql, params).fetchone()[0]


def stored_keys(conn, staff) -> int:
    act_as(conn, staff.id, staff.role)
    return conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0]


def expire_keys(conn, staff) -> None:
    act_as(conn, staff.id, staff.role)
    conn.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")


def headers_of(response) -> list:
    return sorted((name, value) for name, value in response.headers.items() if name not in PER_REQUEST)


def assert_replayed(first, replay):
    assert replay.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert (replay.status_code, headers_of(replay), replay.get_data()) == (
        first.status_code, headers_of(first), first.get_data())


def events(conn, event_type: str) -> list[tuple]:
    act_as(conn, uuid.uuid4())
    return conn.execute("SELECT action, entity_type, entity_id, patient_id::text, outcome FROM audit_events "
                        "WHERE event_type = %s ORDER BY id", (event_type,)).fetchall()


def staff_with_token(uow) -> dict:
    """A provider with a live token, for an app on a database of its own: their headers."""
    user = uow.users.add(email=f"staff-{uuid.uuid4().hex[:8]}@clarity.test", display_name="Staff", role="provider",
                         password_hash="$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
    token, digest = new_token()
    uow.tokens.add(user_id=user.id, token_hash=digest, max_age_seconds=3600, client_addr=None)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def patient(provider, create_patient):
    return create_patient(provider)


@pytest.fixture
def book(client, provider, patient):
    def book_(key: str | None, body=None, staff=None, patient_id=None):
        staff = staff or provider
        return client.post(f"/api/v1/patients/{patient_id or patient['id']}/appointments", json=body or slot(),
                           headers=keyed(staff, key) if key is not None else staff.headers)
    return book_


def appointments(conn, patient) -> int:
    return count(conn, "SELECT count(*) FROM appointments WHERE patient_id = %s", patient["id"])


# --- replays ---------------------------------------------------------------------------------------------


def test_a_retried_booking_gets_the_first_answer_byte_for_byte_and_books_nothing_more(book, conn, patient):
    key = new_key()
    first = book(key)
    replay = book(key)

    assert first.status_code == 201 and first.headers["Location"] and first.headers["ETag"] == '"1"'
    assert_replayed(first, replay)
    assert appointments(conn, patient) == 1


def test_a_replay_is_audited_as_a_read_of_the_answer_it_gives_again(book, conn, patient, provider):
    key = new_key()
    appointment = book(key).get_json()
    book(key)
    book(key)

    assert events(conn, "appointment.create") == [("C", "appointment", appointment["id"], patient["id"], "success")]
    assert events(conn, "idempotency.replay") == [("R", "appointment", appointment["id"], patient["id"], "success")] * 2


def test_a_replay_of_an_answer_given_under_an_emergency_grant_is_audited_as_emergency_access(
        client, conn, provider, make_staff, create_patient):
    stranger = create_patient(make_staff("provider"))
    assert client.post(f"/api/v1/patients/{stranger['id']}/emergency-access", headers=provider.headers,
                       json={"reason": "Unconscious in the emergency department."}).status_code == 201
    key, url = new_key(), f"/api/v1/patients/{stranger['id']}/appointments"

    first = client.post(url, json=slot(), headers=keyed(provider, key))
    replay = client.post(url, json=slot(), headers=keyed(provider, key))

    assert_replayed(first, replay)
    assert [e[0] for e in events(conn, "appointment.emergency_create")] == ["C"]
    assert events(conn, "idempotency.emergency_replay") == [
        ("R", "appointment", first.get_json()["id"], stranger["id"], "success")]


def test_the_quoted_key_and_its_bare_form_are_one_key(book, conn, patient):
    first = book('"order-17"')
    replay = book("order-17")

    assert_replayed(first, replay)
    assert appointments(conn, patient) == 1


def test_a_replay_needs_no_longer_the_token_that_wrote_it_only_its_principal(book, db, provider, conn, patient):
    key = new_key()
    first = book(key)
    token, digest = new_token()
    db.run(lambda uow: uow.tokens.add(user_id=provider.id, token_hash=digest, max_age_seconds=3600, client_addr=None))

    replay = book(key, staff=Staff(provider.id, provider.role, provider.email, token, provider.password))

    assert_replayed(first, replay)
    assert appointments(conn, patient) == 1


def test_a_patient_registered_twice_with_one_key_is_one_patient(client, admin, provider, conn):
    key, body = new_key(), patient_body(provider_id=str(provider.id))
    first = client.post("/api/v1/patients", json=body, headers=keyed(admin, key))
    replay = client.post("/api/v1/patients", json=body, headers=keyed(admin, key))

    assert first.status_code == 201
    assert_replayed(first, replay)
    assert count(conn, "SELECT count(*) FROM patients WHERE provider_id = %s", provider.id) == 1


def test_the_digital_twin_put_is_idempotent_for_its_first_and_later_versions(client, conn, provider, patient):
    url = f"/api/v1/patients/{patient['id']}/digital-twin"
    config = {"model": {"name": "cardio-risk", "version": "1.4.0"}, "parameters": {"age_weight": 0.3},
              "enabled_signals": ["heart_rate"]}
    first_key, second_key = new_key(), new_key()

    created = client.put(url, json=config, headers=keyed(provider, first_key))
    created_again = client.put(url, json=config, headers=keyed(provider, first_key))  # without it: 428
    changed = client.put(url, json=config, headers={**keyed(provider, second_key), "If-Match": '"1"'})
    changed_again = client.put(url, json=config, headers={**keyed(provider, second_key), "If-Match": '"1"'})  # 412

    assert (created.status_code, changed.status_code) == (201, 200)
    assert_replayed(created, created_again)
    assert_replayed(changed, changed_again)
    assert count(conn, "SELECT count(*) FROM digital_twin_versions WHERE patient_id = %s", patient["id"]) == 2


# --- one key, another request ----------------------------------------------------------------------------


def test_the_same_key_with_another_body_is_422_and_books_nothing(book, conn, patient):
    key = new_key()
    book(key, slot(0))
    other = book(key, slot(1))

    assert other.status_code == 422 and other.mimetype == "application/problem+json"
    assert "different request" in other.get_json()["detail"]
    assert appointments(conn, patient) == 1


def test_the_same_key_on_another_path_or_query_is_422(client, book, provider, create_patient, patient):
    key = new_key()
    book(key)
    other_patient = create_patient(provider)

    assert book(key, patient_id=other_patient["id"]).status_code == 422
    assert client.post(f"/api/v1/patients/{patient['id']}/appointments?x=1", json=slot(),
                       headers=keyed(provider, key)).status_code == 422


def test_two_users_use_the_same_key_independently(client, conn, make_staff):
    alice, bob = make_staff("provider"), make_staff("provider")
    key, bodies = new_key(), {"alice": patient_body(), "bob": patient_body()}

    def register(staff, name):
        return client.post("/api/v1/patients", json=bodies[name], headers=keyed(staff, key))

    made = [register(alice, "alice"), register(bob, "bob")]
    replays = [register(alice, "alice"), register(bob, "bob")]
    crossed = register(alice, "bob")

    assert [m.status_code for m in made] == [201, 201]
    assert made[0].get_json()["id"] != made[1].get_json()["id"]
    assert_replayed(made[0], replays[0])
    assert_replayed(made[1], replays[1])
    assert crossed.status_code == 422  # alice's key holds alice's request, whatever bob sent under his
    assert (stored_keys(conn, alice), stored_keys(conn, bob)) == (1, 1)


def test_a_principal_sees_only_their_own_keys_and_an_admin_none_of_anyone_elses(book, conn, provider, admin):
    book(new_key())

    assert stored_keys(conn, provider) == 1
    assert stored_keys(conn, admin) == 0
    act_as(conn, uuid.UUID(int=0), "maintenance")  # the purge sees expired keys only
    assert conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 0


def test_the_purge_actor_sees_expired_keys_only_and_can_change_none(book, conn, provider):
    book("expired", slot(0))
    book("live", slot(1))
    act_as(conn, provider.id, "provider")
    conn.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key_hash = %s",
                 (idempotency.key_digest("expired"),))

    act_as(conn, idempotency.MAINTENANCE.id, idempotency.MAINTENANCE.role)
    seen = conn.execute("SELECT key_hash FROM idempotency_keys").fetchall()
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        conn.execute("UPDATE idempotency_keys SET expires_at = now() + interval '1 day'")

    assert seen == [(idempotency.key_digest("expired"),)]
    assert stored_keys(conn, provider) == 2


def test_an_answer_is_kept_for_the_configured_time(book, conn, provider):
    book(new_key())
    act_as(conn, provider.id, "provider")

    assert conn.execute("SELECT expires_at - created_at FROM idempotency_keys").fetchone()[0] == dt.timedelta(days=1)


@pytest.mark.parametrize("value, expected", [("3600", 3600), ("0", ConfigError), ("-5", ConfigError),
                                             ("a day", ConfigError)])
def test_the_time_to_keep_answers_comes_from_the_environment(value, expected):
    environ = {"CLARITY_IDEMPOTENCY_TTL_SECONDS": value}
    if expected is ConfigError:
        with pytest.raises(ConfigError, match="CLARITY_IDEMPOTENCY_TTL_SECONDS"):
            config.from_env(environ)
    else:
        assert config.from_env(environ).idempotency_ttl_seconds == expected


def test_the_stored_answer_is_enciphered_and_holds_no_trace_of_the_key_or_the_body(client, conn, provider):
    key = "order-canary-7f3a"
    made = client.post("/api/v1/patients", json=patient_body(last_name="Zebedee-Canary"),
                       headers=keyed(provider, key))
    act_as(conn, provider.id, "provider")
    row = conn.execute("SELECT key_hash, response, response_key_id FROM idempotency_keys").fetchone()

    assert made.status_code == 201
    assert row[0] == hashlib.sha256(key.encode()).digest() and row[2] == "test1"
    assert b"Canary" not in bytes(row[1]) and b"canary" not in bytes(row[1]) and made.get_json()["id"].encode() not in bytes(row[1])


# --- keys that do not hold --------------------------------------------------------------------------------


def test_an_expired_key_runs_the_request_again(book, conn, provider, patient):
    key = new_key()
    first = book(key, slot(0))
    expire_keys(conn, provider)

    again = book(key, slot(1))
    replay = book(key, slot(1))

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.get_json()["id"] != first.get_json()["id"]
    assert_replayed(again, replay)
    assert appointments(conn, patient) == 2 and stored_keys(conn, provider) == 1


def test_a_key_whose_request_is_still_running_is_409_with_retry_after(book, conn, server, test_database, provider,
                                                                      patient):
    key = str(uuid.uuid4())
    lock = idempotency.lock_key(provider.id, idempotency.key_digest(key))
    with psycopg.connect(server.url(test_database, APP_ROLE)) as running, running.transaction():
        assert running.execute("SELECT pg_try_advisory_xact_lock(7302203, %s::integer)", (lock,)).fetchone()[0]
        busy = book(key)

    assert busy.status_code == 409 and busy.headers["Retry-After"] == "1"
    assert busy.mimetype == "application/problem+json" and "still being processed" in busy.get_json()["detail"]
    assert appointments(conn, patient) == 0
    assert book(key).status_code == 201  # the lock released, the key was never taken


@pytest.mark.parametrize("header", [
    "", '""', '"', '"unterminated', "two words", '"two words"', "a,b", '"a", "b"', "a;p=1", '"bad\\escape"',
    "x" * 256, '"' + "x" * 256 + '"', "caf\u00e9",
])
def test_a_malformed_key_is_400_and_nothing_is_done(book, conn, patient, header):
    response = book(header)

    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    assert "Idempotency-Key must be a quoted string" in response.get_json()["detail"]
    assert appointments(conn, patient) == 0


@pytest.mark.parametrize("header", ['"a\\"b\\\\c"', "x" * 255, '"' + "y" * 255 + '"', "!#$%&'*+-.^_`|~:/"])
def test_keys_of_up_to_255_visible_characters_are_accepted_quoted_or_bare(book, header):
    assert book(header).status_code == 201
    assert book(header).headers["Idempotent-Replayed"] == "true"


def test_a_failed_request_leaves_no_key_so_the_corrected_retry_runs(book, conn, provider, make_staff, create_patient,
                                                                    patient):
    key = new_key()
    invalid = book(key, {"starts_at": slot()["starts_at"]})  # no ends_at
    strangers = book(key, patient_id=create_patient(make_staff("provider"))["id"])  # not yours: 404
    corrected = book(key)

    assert (invalid.status_code, strangers.status_code, corrected.status_code) == (422, 404, 201)
    assert_replayed(corrected, book(key))
    assert appointments(conn, patient) == 1


def test_a_conflicting_booking_is_not_kept_either(book, conn, provider, make_staff, patient):
    book(None, slot(0))
    key = new_key()

    taken = book(key, slot(0))
    moved = book(key, slot(3))

    assert (taken.status_code, moved.status_code) == (409, 201)
    assert appointments(conn, patient) == 2


def test_a_commit_that_fails_answers_503_and_keeps_neither_the_write_nor_the_key(book, conn, provider, patient,
                                                                                 monkeypatch):
    key = new_key()

    def failing_insert(self, events, **context):
        raise psycopg.OperationalError("the server closed the connection")

    with monkeypatch.context() as patch:
        patch.setattr(AuditRepository, "add_all", failing_insert)
        failed = book(key)

    assert failed.status_code == 503 and failed.mimetype == "application/problem+json"
    assert "retry with the same Idempotency-Key" in failed.get_json()["detail"]
    assert appointments(conn, patient) == 0 and stored_keys(conn, provider) == 0
    assert book(key).status_code == 201


# --- where the header does not apply ---------------------------------------------------------------------


def test_routes_the_key_does_not_cover_ignore_it_even_malformed(client, provider, patient):
    bad = {"Idempotency-Key": "not a key"}

    read = client.get(f"/api/v1/patients/{patient['id']}", headers={**provider.headers, **bad})
    signed_in = [client.post("/api/v1/auth/tokens", json={"email": provider.email, "password": provider.password},
                             headers={"Idempotency-Key": '"same"'}) for _ in range(2)]

    assert read.status_code == 200
    assert [s.status_code for s in signed_in] == [201, 201]
    assert signed_in[0].get_json()["token"] != signed_in[1].get_json()["token"]  # never a kept token
    assert "Idempotent-Replayed" not in signed_in[1].headers


def test_without_the_header_a_write_runs_no_statement_more_and_with_it_three(book, monkeypatch):
    executed = statements_run(monkeypatch)
    assert book(None, slot(0)).status_code == 201
    plain = list(executed)
    executed.clear()
    assert book(new_key(), slot(1)).status_code == 201

    assert not [name for name in plain if "idempotency" in name]
    assert [name for name in executed if name not in plain] == [
        "lock_idempotency_key", "get_idempotency_key", "upsert_idempotency_key"]
    assert len(executed) == len(plain) + 3


# --- a route that streams its body ------------------------------------------------------------------------


@pytest.fixture
def streaming_app(server, test_database, keyring, conn):
    """An app with a route that reads its body as a stream and reports its digest, as an upload does."""
    app = checked(create_app(make_settings(server, test_database), keyring=keyring))

    @api_idempotency.streamed_body(lambda: UPLOAD_LIMIT)
    def upload(patient_id):
        request.max_content_length = UPLOAD_LIMIT  # over the app's 4 MiB, as an upload route sets it
        digest = hashlib.sha256()
        for chunk in iter(lambda: request.stream.read(4096), b""):
            digest.update(chunk)
        if request.args.get("forget") is None:
            api_idempotency.body_read(digest.digest())
        run(lambda uow, actor: uow.audit(AuditEvent(CREATE, "test.upload", "upload", digest.hexdigest(), patient_id)))
        return {"sha256": digest.hexdigest()}, 201

    app.add_url_rule("/test-upload/<uuid:patient_id>", view_func=upload, methods=["POST"])
    app.extensions["clarity"].db.use_connection(conn)
    return app


def test_a_streamed_body_is_fingerprinted_by_the_digest_its_route_reports(streaming_app, conn, provider, patient):
    client, key = streaming_app.test_client(), new_key()
    url = f"/test-upload/{patient['id']}"

    def upload(body: bytes, query=""):
        return client.post(url + query, data=body, headers={**keyed(provider, key), "Content-Type": "application/pdf"})

    five_mib = b"%PDF-1.7 " + bytes(5 * 1024 * 1024)
    first = upload(five_mib)
    replay = upload(five_mib)
    other = upload(b"%PDF-1.7 other")
    too_large = upload(five_mib + bytes(UPLOAD_LIMIT))

    assert first.status_code == 201
    assert_replayed(first, replay)
    assert other.status_code == 422
    assert too_large.status_code == 413
    assert len(events(conn, "test.upload")) == 1


def test_a_streamed_route_that_never_reports_its_digest_fails_and_keeps_nothing(streaming_app, conn, provider, patient):
    response = streaming_app.test_client().post(f"/test-upload/{patient['id']}?forget=1", data=b"%PDF-1.7",
                                                headers={**keyed(provider, new_key()), "Content-Type": "application/pdf"})

    assert response.status_code == 500
    assert events(conn, "test.upload") == [] and stored_keys(conn, provider) == 0


def test_work_retried_after_a_serialization_failure_takes_the_key_again_and_keeps_it(server, fresh_database, keyring):
    app = create_app(make_settings(server, fresh_database), keyring=keyring)
    attempts = []

    def flaky(patient_id):
        def work(uow, actor):
            attempts.append(uow)
            uow.audit(AuditEvent(CREATE, "test.flaky", "test", len(attempts), patient_id))
            if len(attempts) == 1:
                raise psycopg.errors.SerializationFailure("could not serialize access")
            return {"attempts": len(attempts)}
        return run(work), 201

    app.add_url_rule("/test-flaky/<uuid:patient_id>", view_func=flaky, methods=["POST"])
    db = app.extensions["clarity"].db
    try:
        headers = db.run(staff_with_token)
        client, url, key = app.test_client(), f"/test-flaky/{uuid.uuid4()}", new_key()
        first = client.post(url, json={}, headers={**headers, "Idempotency-Key": key})
        replay = client.post(url, json={}, headers={**headers, "Idempotency-Key": key})
        with psycopg.connect(server.url(fresh_database), autocommit=True) as owner:
            kept = owner.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0]
            flaky_events = owner.execute("SELECT entity_id FROM audit_events WHERE event_type = 'test.flaky'").fetchall()
    finally:
        db.close()
    assert (first.status_code, first.get_json()) == (201, {"attempts": 2})
    assert len(attempts) == 2 and attempts[0] is not attempts[1] and attempts[1].claim is not None
    assert_replayed(first, replay)
    assert kept == 1 and flaky_events == [("2",)]


# --- purging expired keys ---------------------------------------------------------------------------------


def test_the_purge_command_deletes_expired_keys_of_every_user_and_keeps_live_ones(app, client, conn, book, provider,
                                                                                  make_staff):
    other = make_staff("provider")
    live_key = new_key()
    live = book(live_key, slot(0))
    for staff in (other, other):
        client.post("/api/v1/patients", json=patient_body(), headers=keyed(staff, new_key()))
    expire_keys(conn, other)

    result = app.test_cli_runner().invoke(args=["idempotency", "purge", "--batch-size", "1"])

    assert result.exit_code == 0, result.output
    assert "purged 2 expired idempotency key(s)" in result.output
    assert (stored_keys(conn, other), stored_keys(conn, provider)) == (0, 1)
    assert_replayed(live, book(live_key, slot(0)))


def test_the_background_sealer_purges_expired_keys_on_its_schedule(server, fresh_database, keyring):
    app = create_app(make_settings(server, fresh_database), keyring=keyring)
    db = app.extensions["clarity"].db
    sealer = None
    try:
        headers = db.run(staff_with_token)
        client = app.test_client()
        for key in ("expiring", "living"):
            assert client.post("/api/v1/patients", json=patient_body(),
                               headers={**headers, "Idempotency-Key": key}).status_code == 201
        with psycopg.connect(server.url(fresh_database), autocommit=True) as owner:  # a superuser: no RLS
            owner.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key_hash = %s",
                          (idempotency.key_digest("expiring"),))
            sealer = audit_chain.start_background_sealer(app, 0.02)
            deadline = time.monotonic() + 10
            while owner.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] > 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            left = owner.execute("SELECT key_hash FROM idempotency_keys").fetchall()
    finally:
        if sealer is not None:
            sealer.stop()
        db.close()
    assert left == [(idempotency.key_digest("living"),)]


def test_the_background_purge_runs_at_most_once_a_minute_and_survives_errors(caplog):
    class Database:
        calls = 0

        def run(self, work, **context):
            self.calls += 1
            raise psycopg.OperationalError("patient 123-45-6789")

    database = Database()
    purger = idempotency.Purger(database)

    with caplog.at_level(logging.WARNING, logger="clarity.idempotency"):
        assert purger() is None and purger() is None
    assert database.calls == 1
    assert "purging expired idempotency keys failed (OperationalError)" in caplog.text and "6789" not in caplog.text


def test_a_unit_held_open_is_committed_by_its_holder(db, conn):
    held = []
    result = db.run(lambda uow: uow.audit(AuditEvent(CREATE, "test.held", "test")) or "done", hold=held.append)

    assert result == "done" and isinstance(held[0], UnitOfWork)
    assert events(conn, "test.held") == []
    held[0].commit()
    assert [e[0] for e in events(conn, "test.held")] == ["C"]


def test_the_openapi_document_declares_the_header_on_every_operation_it_covers_and_no_other(app, client):
    spec = client.get("/api/v1/openapi.json").get_json()
    declared, covered = set(), set()
    for rule in app.url_map.iter_rules():
        for method in rule.methods & {"POST", "PUT"}:
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            operation = spec["paths"].get(path, {}).get(method.lower())
            if operation is None:
                continue
            if any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in operation.get("parameters", ())):
                declared.add((method, path))
            if (method == "POST" and operation.get("security") != []) or rule.endpoint in api_idempotency.PUT_ENDPOINTS:
                covered.add((method, path))
    assert ("POST", "/api/v1/patients") in declared
    assert ("PUT", "/api/v1/patients/{patient_id}/digital-twin") in declared
    assert ("POST", "/api/v1/auth/tokens") not in declared
    assert declared == covered
