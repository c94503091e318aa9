"""Data-key rotation: every row ends under the active key, nothing lost, resumable."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid

import psycopg
import pytest

from clarity import create_app
from clarity.config import decode_key
from clarity.security.access import Actor
from clarity.security.crypto import Keyring, generate_key
from clarity.services import keys as rotation
from clarity.services import patients
from tests.conftest import APP_ROLE, make_settings, patient_body

OLD, NEW = generate_key(), generate_key()


def database_for(server, name, keyring):
    return create_app(make_settings(server, name), keyring=keyring).extensions["clarity"].db


def ring(active, blind):
    return Keyring({"k1": decode_key(OLD, "k1"), "k2": decode_key(NEW, "k2")}, active, decode_key(blind, "b"))


@pytest.fixture
def seeded(server, fresh_database, keys):
    """30 patients of one provider and an emergency grant, all enciphered under k1."""
    old_db = database_for(server, fresh_database, Keyring({"k1": decode_key(OLD, "k1")}, "k1", decode_key(keys["blind"], "b")))
    provider = old_db.run(lambda uow: uow.users.add(email="rot@clarity.test", display_name="R", role="provider",
                                                    password_hash="x"))
    actor = Actor(id=provider.id, role="provider")
    ids = [old_db.run(lambda uow: uow.patients.add(provider_id=provider.id, status="active", phi=phi(n)), actor=actor).id
           for n in range(30)]
    other = old_db.run(lambda uow: uow.users.add(email="rot2@clarity.test", display_name="R2", role="provider",
                                                 password_hash="x"))
    old_db.run(lambda uow: uow.emergency_access.add(patient_id=ids[0], provider_id=other.id,
                                                    reason="rotation test reason", minutes=5),
               actor=Actor(id=other.id, role="provider"))
    old_db.close()
    new_db = database_for(server, fresh_database, ring("k2", keys["blind"]))
    yield new_db, actor, ids
    new_db.close()


def phi(n):
    return patient_body(mrn=f"ROT-{n:04d}", last_name=f"Rotated{n}")


def key_ids(server, database):
    with psycopg.connect(server.url(database), autocommit=True) as owner:
        return {row[0]: row[1] for row in owner.execute(
            "SELECT phi_key_id, count(*) FROM patients GROUP BY 1 UNION ALL "
            "SELECT 'grant:' || reason_key_id, count(*) FROM emergency_access_grants GROUP BY 1")}


def test_rotation_re_enciphers_every_row_under_the_active_key_and_keeps_content_and_versions(server, fresh_database, seeded):
    db, actor, ids = seeded
    before = {i: db.run(lambda uow: uow.patients.get(i, actor), actor=actor) for i in ids}
    report = rotation.rotate_data_keys(db, batch_size=7)
    assert (report.done, report.failed, report.remaining) == (31, set(), 0)
    assert key_ids(server, fresh_database) == {"k2": 30, "grant:k2": 1}
    for i in ids:
        after = db.run(lambda uow: uow.patients.get(i, actor), actor=actor)
        assert (after.phi, after.version, after.updated_at) == (before[i].phi, before[i].version, before[i].updated_at)
    grants = db.run(lambda uow: uow.emergency_access.list(active_only=False), actor=rotation.SYSTEM)
    assert [g.reason for g in grants] == ["rotation test reason"]


def test_rotation_is_audited_per_row(server, fresh_database, seeded):
    db, actor, ids = seeded
    rotation.rotate_data_keys(db, batch_size=50)
    with psycopg.connect(server.url(fresh_database), autocommit=True) as owner:
        rows = owner.execute("SELECT count(DISTINCT patient_id) FROM audit_events WHERE event_type = 'patient.reencrypt'").fetchone()
    assert rows == (30,)


def test_rotation_stopped_midway_resumes_and_finishes(server, fresh_database, seeded):
    db, actor, ids = seeded
    partial = rotation.rotate_data_keys(db, batch_size=5, max_batches=2)
    assert partial.done == 10 and partial.remaining == 21
    finished = rotation.rotate_data_keys(db, batch_size=5)
    assert finished.done == 21 and finished.remaining == 0
    assert key_ids(server, fresh_database) == {"k2": 30, "grant:k2": 1}


def test_a_rotation_killed_mid_run_loses_nothing_and_a_rerun_finishes(server, fresh_database, seeded, keys):
    db, actor, ids = seeded
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CLARITY_")},
           "DATABASE_URL": server.url(fresh_database, APP_ROLE), "CLARITY_DATA_KEYS": f"k1:{OLD},k2:{NEW}",
           "CLARITY_ACTIVE_DATA_KEY": "k2", "CLARITY_BLIND_INDEX_KEY": keys["blind"], "CLARITY_LOG_LEVEL": "WARNING"}
    flask = [os.path.join(os.path.dirname(sys.executable), "flask"), "--app", "wsgi", "keys", "rotate", "--batch-size", "3"]
    process = subprocess.Popen(flask, env=env, stdout=subprocess.PIPE, text=True)
    assert "re-enciphered" in process.stdout.readline()
    process.send_signal(signal.SIGKILL)
    process.wait()
    rerun = subprocess.run(flask, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert key_ids(server, fresh_database) == {"k2": 30, "grant:k2": 1}
    for n, i in enumerate(ids):
        assert db.run(lambda uow: uow.patients.get(i, actor), actor=actor).phi["mrn"] == f"ROT-{n:04d}"


def test_rotation_loses_no_concurrent_update(server, fresh_database, seeded):
    db, actor, ids = seeded
    written, stop = {}, threading.Event()

    def updater():
        n = 0
        while not stop.is_set():
            n += 1
            for i in ids[::3]:
                note = f"update {n}"

                def work(uow, i=i, note=note):
                    current = uow.patients.get(i, actor)
                    return patients.update_patient(uow, actor, i, current.version, {"notes": note})
                db.run(work, actor=actor)
                written[i] = note

    thread = threading.Thread(target=updater)
    thread.start()
    try:
        report = rotation.rotate_data_keys(db, batch_size=2)
    finally:
        stop.set()
        thread.join()
    assert report.remaining == 0 and not report.failed
    assert key_ids(server, fresh_database) == {"k2": 30, "grant:k2": 1}
    for i, note in written.items():
        assert db.run(lambda uow: uow.patients.get(i, actor), actor=actor).phi["notes"] == note


def test_rows_under_a_key_that_is_no_longer_configured_are_reported_not_lost(server, fresh_database, seeded, keys):
    db, actor, ids = seeded
    only_new = database_for(server, fresh_database, Keyring({"k2": decode_key(NEW, "k2")}, "k2", decode_key(keys["blind"], "b")))
    try:
        report = rotation.rotate_data_keys(only_new, batch_size=10)
    finally:
        only_new.close()
    assert len(report.failed) == 31 and report.remaining == 31 and report.done == 0
    assert key_ids(server, fresh_database) == {"k1": 30, "grant:k1": 1}


def test_rotation_re_enciphers_medical_record_bodies_and_counts_them(server, test_database, conn, keys):
    """Records written under k1 (an original and its amendment) end under k2 with the same
    bodies; the report counts them. Runs in the test's rolled-back transaction."""
    blind = decode_key(keys["blind"], "b")
    old_db = database_for(server, test_database, Keyring({"k1": decode_key(OLD, "k1")}, "k1", blind))
    new_db = database_for(server, test_database, ring("k2", keys["blind"]))
    for db in (old_db, new_db):
        db.use_connection(conn)
    user = old_db.run(lambda uow: uow.users.add(email=f"rec-{uuid.uuid4().hex[:6]}@clarity.test", display_name="R",
                                                role="provider", password_hash="x"))
    actor = Actor(id=user.id, role="provider")
    patient = old_db.run(lambda uow: uow.patients.add(provider_id=user.id, status="active", phi=phi(0)), actor=actor)

    def add_record(text, amends_id=None):
        return old_db.run(lambda uow: uow.records.add(patient_id=patient.id, type="note", body={"text": text},
                                                      author_id=user.id, amends_id=amends_id), actor=actor).id

    first = add_record("original")
    ids = [first, add_record("corrected", amends_id=first), add_record("another")]
    report = rotation.rotate_data_keys(new_db, batch_size=2)
    assert (report.done, report.failed, report.remaining) == (4, set(), 0)
    conn.execute("SELECT set_config('clarity.actor_role', 'admin', true)")
    assert conn.execute("SELECT body_key_id, count(*) FROM medical_records GROUP BY 1").fetchall() == [("k2", 3)]
    chain = new_db.run(lambda uow: uow.records.get_chain(first, actor), actor=actor)
    assert [(v.id, v.body["text"]) for v in chain.versions] == [(ids[0], "original"), (ids[1], "corrected")]
    assert rotation.rotate_data_keys(new_db).done == 0
