"""Concurrent bookings with real commits on a cloned database: the exclusion constraint lets
exactly one of many simultaneous bookings of a provider's slot commit, and every loser gets
a 409 (no 500, no 503 from a deadlock), audited as a failure.

Each thread posts through its own test client and its own bearer token (so no two requests
share a token row), through the app's real pool, released together by a barrier.
"""
from __future__ import annotations

import datetime as dt
import threading

import psycopg
import pytest

from clarity import create_app
from clarity.security.access import new_token
from tests.conftest import make_settings, patient_body

CLIENTS = 20
PASSWORD_HASH = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
SLOT = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def booking_app(server, fresh_database, keyring):
    app = create_app(make_settings(server, fresh_database, pool_min_size=CLIENTS, pool_max_size=CLIENTS,
                                   pool_timeout=10.0), keyring=keyring)
    app.extensions["clarity"].db.open(wait=True)  # every connection up before the race
    yield app
    app.extensions["clarity"].db.close()


@pytest.fixture
def owner(server, fresh_database):
    """The schema owner's connection: sees every committed row (no row-level security)."""
    with psycopg.connect(server.url(fresh_database), autocommit=True) as conn:
        yield conn


@pytest.fixture
def practice(booking_app):
    """A provider with CLIENTS patients and CLIENTS live tokens, committed."""
    db = booking_app.extensions["clarity"].db

    def work(uow):
        user = uow.users.add(email="racer@clarity.test", display_name="Racer", role="provider",
                             password_hash=PASSWORD_HASH)
        tokens = []
        for _ in range(CLIENTS):
            token, digest = new_token()
            uow.tokens.add(user_id=user.id, token_hash=digest, max_age_seconds=3600, client_addr=None)
            tokens.append(token)
        return user.id, tokens

    provider_id, tokens = db.run(work)
    client = booking_app.test_client()
    patients = []
    for token in tokens:
        response = client.post("/api/v1/patients", json=patient_body(), headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 201, response.get_json()
        patients.append(response.get_json()["id"])
    return provider_id, tokens, patients


def book_all_at_once(app, tokens, patients, slots) -> list[int]:
    """POST one booking per (token, patient, slot) from CLIENTS threads at the same moment."""
    barrier = threading.Barrier(len(tokens))
    statuses: list[int | None] = [None] * len(tokens)

    def book(i):
        client = app.test_client()
        starts_at, ends_at = slots[i]
        body = {"starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat()}
        barrier.wait(timeout=10)
        response = client.post(f"/api/v1/patients/{patients[i]}/appointments", json=body,
                               headers={"Authorization": f"Bearer {tokens[i]}"})
        statuses[i] = response.status_code

    threads = [threading.Thread(target=book, args=(i,)) for i in range(len(tokens))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return statuses


def test_twenty_concurrent_bookings_of_one_slot_give_exactly_one_201_and_nineteen_409s(booking_app, practice, owner):
    provider_id, tokens, patients = practice
    slot = (SLOT, SLOT + dt.timedelta(minutes=30))

    statuses = book_all_at_once(booking_app, tokens, patients, [slot] * CLIENTS)

    assert sorted(statuses) == [201] + [409] * (CLIENTS - 1)
    assert owner.execute("SELECT count(*) FROM appointments WHERE provider_id = %s", (provider_id,)).fetchone() == (1,)
    outcomes = owner.execute("SELECT outcome, count(*) FROM audit_events WHERE event_type = 'appointment.create'"
                             " GROUP BY outcome ORDER BY outcome").fetchall()
    assert outcomes == [("failure", CLIENTS - 1), ("success", 1)]


def test_twenty_concurrent_back_to_back_bookings_all_succeed(booking_app, practice, owner):
    provider_id, tokens, patients = practice
    slots = [(SLOT + dt.timedelta(minutes=15 * i), SLOT + dt.timedelta(minutes=15 * (i + 1))) for i in range(CLIENTS)]

    statuses = book_all_at_once(booking_app, tokens, patients, slots)

    assert statuses == [201] * CLIENTS
    assert owner.execute("SELECT count(*) FROM appointments WHERE provider_id = %s", (provider_id,)).fetchone() == (CLIENTS,)
