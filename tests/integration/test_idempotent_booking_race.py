"""One booking sent 20 times at once with one Idempotency-Key, over HTTP to a threaded server on
a cloned database with real commits: exactly one appointment is made, and every answer is
either that booking's 201, byte for byte, or a 409 (the key's first request still running)."""
from __future__ import annotations

import datetime as dt
import threading
import uuid

import psycopg
import pytest
import requests
from werkzeug.serving import make_server

from clarity import create_app
from clarity.security.access import new_token
from tests.conftest import make_settings, patient_body

CLIENTS = 20
PASSWORD_HASH = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
SLOT = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def served(server, fresh_database, keyring):
    """A threaded HTTP server (a thread per request, each with its pooled connection) on a free port."""
    app = create_app(make_settings(server, fresh_database, pool_min_size=CLIENTS, pool_max_size=CLIENTS,
                                   pool_timeout=10.0), keyring=keyring)
    app.extensions["clarity"].db.open(wait=True)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()
        thread.join(timeout=10)
        app.extensions["clarity"].db.close()


@pytest.fixture
def owner(server, fresh_database):
    """A superuser's connection: sees every committed row (no row-level security)."""
    with psycopg.connect(server.url(fresh_database), autocommit=True) as conn:
        yield conn


@pytest.fixture
def booking(served):
    """A provider's token and a patient of theirs, committed; the booking's URL and body."""
    app, base = served

    def work(uow):
        user = uow.users.add(email="retrier@clarity.test", display_name="Retrier", role="provider",
                             password_hash=PASSWORD_HASH)
        token, digest = new_token()
        uow.tokens.add(user_id=user.id, token_hash=digest, max_age_seconds=3600, client_addr=None)
        return token

    headers = {"Authorization": f"Bearer {app.extensions['clarity'].db.run(work)}"}
    patient = requests.post(f"{base}/api/v1/patients", json=patient_body(), headers=headers, timeout=10)
    assert patient.status_code == 201, patient.text
    body = {"starts_at": SLOT.isoformat(), "ends_at": (SLOT + dt.timedelta(minutes=30)).isoformat()}
    return f"{base}/api/v1/patients/{patient.json()['id']}/appointments", body, headers


def send_all_at_once(url, body, headers) -> list[requests.Response]:
    barrier = threading.Barrier(CLIENTS)
    answers: list[requests.Response | None] = [None] * CLIENTS

    def send(i):
        with requests.Session() as session:
            barrier.wait(timeout=10)
            answers[i] = session.post(url, json=body, headers=headers, timeout=30)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def test_twenty_concurrent_sends_of_one_booking_with_one_key_book_once_and_answer_alike(booking, owner):
    url, body, headers = booking

    answers = send_all_at_once(url, body, {**headers, "Idempotency-Key": f'"{uuid.uuid4()}"'})

    assert all(a is not None for a in answers)
    booked = [a for a in answers if a.status_code == 201]
    busy = [a for a in answers if a.status_code == 409]
    assert len(booked) + len(busy) == CLIENTS, sorted(a.status_code for a in answers)
    assert booked, "no request booked"
    assert len({a.content for a in booked}) == 1
    assert len({(a.headers["Location"], a.headers["ETag"]) for a in booked}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in booked) == len(booked) - 1
    # In flight, not the slot's exclusion constraint (which names starts_at and has no Retry-After).
    assert all(a.headers.get("Retry-After") == "1" and "field" not in a.json() for a in busy)
    print(f"{len(booked)} x 201 (1 booked, {len(booked) - 1} replayed), {len(busy)} x 409")
    assert owner.execute("SELECT count(*) FROM appointments").fetchone() == (1,)
    assert owner.execute("SELECT count(*) FROM idempotency_keys").fetchone() == (1,)
    assert owner.execute("SELECT count(*) FROM audit_events WHERE event_type = 'appointment.create'").fetchone() == (1,)
    assert owner.execute("SELECT count(*) FROM audit_events WHERE event_type = 'idempotency.replay'"
                         ).fetchone() == (len(booked) - 1,)


def test_without_a_key_the_same_twenty_sends_are_refused_by_the_slot_but_not_one_is_replayed(booking, owner):
    """The control: without the key, the exclusion constraint still books once, and the other
    nineteen are told the slot is taken (409 naming starts_at), not answered as the first was."""
    url, body, headers = booking

    answers = send_all_at_once(url, body, headers)

    assert sorted(a.status_code for a in answers) == [201] + [409] * (CLIENTS - 1)
    assert all(a.json()["field"] == "starts_at" for a in answers if a.status_code == 409)
    assert owner.execute("SELECT count(*) FROM appointments").fetchone() == (1,)
