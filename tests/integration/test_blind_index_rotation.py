"""Blind-index key rotation: rebuild into the next columns, promote, switch; every patient stays
findable by MRN, email and last name at every step, and MRNs stay unique."""
from __future__ import annotations

import psycopg
import pytest

from clarity import create_app
from clarity.config import decode_key
from clarity.errors import Conflict
from clarity.security.crypto import Keyring, generate_key
from clarity.services import keys as rotation
from tests.conftest import make_settings, patient_body

B1, B2 = generate_key(), generate_key()


@pytest.fixture
def stage(server, fresh_database, keys):
    """``stage(current, next=None)``: a Database on the fresh database with those blind keys."""
    opened = []

    def make(current, next_key=None):
        ring = Keyring({"test1": decode_key(keys["data"]["test1"], "d")}, "test1", decode_key(current, "c"),
                       decode_key(next_key, "n") if next_key else None)
        db = create_app(make_settings(server, fresh_database), keyring=ring).extensions["clarity"].db
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.close()


@pytest.fixture
def admin():
    return rotation.SYSTEM


def add(db, admin, provider_id, n):
    body = patient_body(mrn=f"BI-{n}", last_name=f"Índexé{n}", email=f"p{n}@example.org")
    return db.run(lambda uow: uow.patients.add(provider_id=provider_id, status="active", phi=body), actor=admin)


def findable(db, admin, n) -> bool:
    for criteria in ({"mrn": f"bi-{n}"}, {"last_name": f"indexe{n}"}, {"email": f"P{n}@example.org"}):
        found = db.run(lambda uow: uow.patients.list(admin, **criteria), actor=admin)
        if [p.phi["mrn"] for p in found] != [f"BI-{n}"]:
            return False
    return True


def next_columns_filled(server, database) -> int:
    with psycopg.connect(server.url(database), autocommit=True) as owner:
        return owner.execute("SELECT count(*) FROM patients WHERE mrn_bidx_next IS NOT NULL").fetchone()[0]


def test_every_patient_stays_findable_through_rebuild_promotion_and_switch(server, fresh_database, stage, admin):
    before = stage(B1)
    provider = before.run(lambda uow: uow.users.add(email="bi@clarity.test", display_name="B", role="provider",
                                                    password_hash="x"))
    for n in range(12):
        add(before, admin, provider.id, n)

    rebuilding = stage(B1, B2)
    add(rebuilding, admin, provider.id, 12)  # written with both keys
    assert all(findable(rebuilding, admin, n) for n in range(13))
    report = rotation.rebuild_blind_indexes(rebuilding, batch_size=5)
    assert (report.done, report.remaining, report.failed) == (12, 0, set())
    assert next_columns_filled(server, fresh_database) == 13

    promoted = stage(B2)
    add(promoted, admin, provider.id, 13)  # main columns under B2, no next
    assert all(findable(promoted, admin, n) for n in range(14))
    assert all(findable(rebuilding, admin, n) for n in range(14)), "instances not yet restarted still find all"

    report = rotation.switch_blind_indexes(promoted, batch_size=4)
    assert report.remaining == 0 and not report.failed
    assert next_columns_filled(server, fresh_database) == 0
    assert all(findable(promoted, admin, n) for n in range(14))
    assert not findable(before, admin, 0), "the retired key finds nothing any more"


def test_mrns_stay_unique_between_promotion_and_switch(server, fresh_database, stage, admin):
    before = stage(B1)
    provider = before.run(lambda uow: uow.users.add(email="bu@clarity.test", display_name="B", role="provider",
                                                    password_hash="x"))
    add(before, admin, provider.id, 1)
    rotation.rebuild_blind_indexes(stage(B1, B2))
    with pytest.raises(Conflict) as raised:
        add(stage(B2), admin, provider.id, 1)
    assert raised.value.field == "mrn"


def test_rebuild_needs_a_next_key_and_switch_needs_it_promoted(stage):
    with pytest.raises(rotation.RotationRefused):
        rotation.rebuild_blind_indexes(stage(B1))
    with pytest.raises(rotation.RotationRefused):
        rotation.switch_blind_indexes(stage(B1, B2))
