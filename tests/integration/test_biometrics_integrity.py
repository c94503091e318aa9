"""What biometric_readings guarantees without a per-row foreign key (migrations/0018): a reading
never names a missing patient, a patient with readings is never hard-deleted (by the owner
either), under concurrency too, and readings are stored once.

On cloned databases with real commits: the owner (here a superuser, so row-level security does
not stop it) is the only role that can hard-delete patients or write partitions directly, and
the concurrent cases need two sessions that each commit.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid

import psycopg
import pytest
from psycopg import errors as pg

from clarity import queries
from clarity.repositories.biometrics import BiometricRepository, Reading
from tests.conftest import APP_ROLE

Q = queries.load().biometrics
BASE = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)).replace(microsecond=0)
INSERT = ("INSERT INTO {table} (patient_id, recorded_at, value, kind, unit, source_device) "
          "VALUES (%s, %s, 70, 'heart_rate', 'bpm', 'owner')")
PARTITION = "SELECT format('%%I', 'biometric_readings_' || to_char(%s AT TIME ZONE 'UTC', 'YYYY_MM'))"
ACT_AS_PROVIDER = ("SELECT set_config('clarity.actor_id', %s, true), "
                   "set_config('clarity.actor_role', 'provider', true)")


@pytest.fixture
def urls(server, fresh_database):
    return server.url(fresh_database), server.url(fresh_database, APP_ROLE)


@pytest.fixture
def owner(urls):
    with psycopg.connect(urls[0], autocommit=True) as conn:
        yield conn


@pytest.fixture
def provider(owner):
    return owner.execute("INSERT INTO users (email, display_name, role, password_hash) "
                         "VALUES (%s, 'Integrity', 'provider', 'x') RETURNING id",
                         (f"integrity-{uuid.uuid4().hex[:8]}@clarity.test",)).fetchone()[0]


@pytest.fixture
def new_patient(owner, provider):
    def make():
        return owner.execute(
            "INSERT INTO patients (provider_id, birth_year, mrn_bidx, last_name_bidx, phi, phi_key_id) "
            "VALUES (%s, 1980, %s, %s, 'x', 'test1') RETURNING id",
            (provider, os.urandom(32), os.urandom(32))).fetchone()[0]
    return make


def batch(n, device="watch", start=BASE) -> list[Reading]:
    return [Reading("heart_rate", 70.0, "bpm", start - dt.timedelta(seconds=i), device) for i in range(n)]


def ingest(conn, provider, patient, readings) -> int:
    """One batch through the repository as the app role, in its own committed transaction."""
    with conn.transaction():
        conn.execute(ACT_AS_PROVIDER, (str(provider),))
        return BiometricRepository(conn, Q).add_many(patient, readings).stored


def stored(owner, patient) -> int:
    return owner.execute("SELECT count(*) FROM biometric_readings WHERE patient_id = %s", (patient,)).fetchone()[0]


def patient_exists(owner, patient) -> bool:
    return owner.execute("SELECT EXISTS (SELECT 1 FROM patients WHERE id = %s)", (patient,)).fetchone()[0]


class Background:
    """Run ``work`` in a thread; ``join()`` returns its result or raises its exception."""

    def __init__(self, work):
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self.thread.start()

    def _run(self, work):
        try:
            self.result = work()
        except Exception as exc:  # noqa: BLE001 -- handed to join()
            self.error = exc

    def join(self):
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the background statement never finished"
        if self.error:
            raise self.error
        return self.result


def wait_until_blocked(owner, pid, background):
    """Until the session ``pid`` waits on a lock (fails if ``background`` ends first)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = owner.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if waiting and waiting[0] == "Lock":
            return
        assert background.thread.is_alive(), f"finished without waiting: {background.error!r}"
        time.sleep(0.02)
    pytest.fail("the session never waited on a lock")


def test_a_reading_for_a_missing_patient_is_refused_on_every_path(urls, owner, provider):
    missing = uuid.uuid4()
    with psycopg.connect(urls[1], autocommit=True) as app:
        # The app role: the row-level security check refuses a patient it cannot see first.
        with pytest.raises(pg.InsufficientPrivilege):
            ingest(app, provider, missing, batch(3))
    partition = owner.execute(PARTITION, (BASE,)).fetchone()[0]
    # The owner, which row-level security does not stop here: the foreign key of biometric_patients.
    for table in ("biometric_readings", partition):
        with pytest.raises(pg.ForeignKeyViolation) as refused:
            owner.execute(INSERT.format(table=table), (missing, BASE))
        assert refused.value.diag.constraint_name == "biometric_patients_patient_id_fkey"
    with pytest.raises(pg.ForeignKeyViolation):
        with owner.cursor() as cur, cur.copy("COPY biometric_readings (patient_id, recorded_at, value, kind, unit, "
                                             "source_device) FROM STDIN") as copy:
            copy.write_row((missing, BASE, 70, "heart_rate", "bpm", "copied"))
    assert stored(owner, missing) == 0


def test_moving_readings_to_a_missing_patient_is_refused_and_to_another_one_protects_it(
        urls, owner, provider, new_patient):
    first, second = new_patient(), new_patient()
    with psycopg.connect(urls[1], autocommit=True) as app:
        assert ingest(app, provider, first, batch(2)) == 2
    with pytest.raises(pg.ForeignKeyViolation):
        owner.execute("UPDATE biometric_readings SET patient_id = %s WHERE patient_id = %s", (uuid.uuid4(), first))
    owner.execute("UPDATE biometric_readings SET patient_id = %s WHERE patient_id = %s", (second, first))
    with pytest.raises(pg.ForeignKeyViolation):
        owner.execute("DELETE FROM patients WHERE id = %s", (second,))


def test_a_patient_with_readings_cannot_be_hard_deleted_even_by_the_owner(urls, owner, provider, new_patient):
    patient, without_readings, direct = new_patient(), new_patient(), new_patient()
    with psycopg.connect(urls[1], autocommit=True) as app:
        assert ingest(app, provider, patient, batch(3)) == 3
    partition = owner.execute(PARTITION, (BASE,)).fetchone()[0]
    owner.execute(INSERT.format(table=partition), (direct, BASE))  # straight into a partition

    for victim in (patient, direct):
        with pytest.raises(pg.ForeignKeyViolation) as refused:
            owner.execute("DELETE FROM patients WHERE id = %s", (victim,))
        assert refused.value.diag.constraint_name == "biometric_patients_patient_id_fkey"
        with pytest.raises(pg.ForeignKeyViolation):
            owner.execute("UPDATE patients SET id = gen_random_uuid() WHERE id = %s", (victim,))
    # What kept them, kept even from the owner.
    for statement in ("DELETE FROM biometric_patients WHERE patient_id = %(id)s",
                      "UPDATE biometric_patients SET patient_id = gen_random_uuid() WHERE patient_id = %(id)s",
                      "TRUNCATE biometric_patients"):
        with pytest.raises(pg.InsufficientPrivilege) as refused:
            owner.execute(statement, {"id": patient})
        assert "permanent" in str(refused.value), statement
    with pytest.raises(pg.FeatureNotSupported):
        owner.execute("TRUNCATE patients")  # referenced by foreign keys
    with pytest.raises(pg.InsufficientPrivilege):
        owner.execute("TRUNCATE patients CASCADE")  # (medical_records refuses it before biometric_patients)
    assert patient_exists(owner, patient) and stored(owner, patient) == 3
    # Not stricter than it must be: a patient without readings can still be deleted.
    owner.execute("DELETE FROM patients WHERE id = %s", (without_readings,))
    assert not patient_exists(owner, without_readings)


def test_a_delete_waiting_for_a_patients_first_batch_fails_when_the_batch_commits(urls, owner, provider, new_patient):
    patient = new_patient()
    with psycopg.connect(urls[1], autocommit=True) as app, psycopg.connect(urls[0], autocommit=True) as deleter:
        with app.transaction():
            app.execute(ACT_AS_PROVIDER, (str(provider),))
            assert BiometricRepository(app, Q).add_many(patient, batch(5)).stored == 5
            delete = Background(lambda: deleter.execute("DELETE FROM patients WHERE id = %s", (patient,)))
            wait_until_blocked(owner, deleter.info.backend_pid, delete)
        with pytest.raises(pg.ForeignKeyViolation):
            delete.join()
    assert patient_exists(owner, patient) and stored(owner, patient) == 5


def test_a_first_batch_waiting_for_a_patients_delete_fails_when_the_delete_commits(urls, owner, provider, new_patient):
    patient = new_patient()
    with psycopg.connect(urls[1], autocommit=True) as app, psycopg.connect(urls[0], autocommit=True) as deleter:
        with deleter.transaction():
            deleter.execute("DELETE FROM patients WHERE id = %s", (patient,))
            insert = Background(lambda: ingest(app, provider, patient, batch(5)))
            wait_until_blocked(owner, app.info.backend_pid, insert)
        with pytest.raises(pg.ForeignKeyViolation):
            insert.join()
    assert not patient_exists(owner, patient) and stored(owner, patient) == 0


def test_a_repeatable_read_delete_cannot_miss_a_batch_committed_after_its_snapshot(urls, owner, provider, new_patient):
    patient = new_patient()
    with psycopg.connect(urls[0]) as deleter, psycopg.connect(urls[1], autocommit=True) as app:
        deleter.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        assert deleter.execute("SELECT count(*) FROM biometric_readings WHERE patient_id = %s",
                               (patient,)).fetchone() == (0,)  # the snapshot: no readings yet
        assert ingest(app, provider, patient, batch(4)) == 4
        with pytest.raises((pg.SerializationFailure, pg.ForeignKeyViolation)):
            deleter.execute("DELETE FROM patients WHERE id = %s", (patient,))
        deleter.rollback()
    assert patient_exists(owner, patient) and stored(owner, patient) == 4


def test_the_same_batch_sent_twice_at_once_is_stored_once(urls, owner, provider, new_patient):
    patient = new_patient()
    readings = batch(50) + batch(50)  # every reading twice within the batch, too
    with psycopg.connect(urls[1], autocommit=True) as first, psycopg.connect(urls[1], autocommit=True) as second:
        with first.transaction():
            first.execute(ACT_AS_PROVIDER, (str(provider),))
            assert BiometricRepository(first, Q).add_many(patient, readings).stored == 50
            again = Background(lambda: ingest(second, provider, patient, readings))
            wait_until_blocked(owner, second.info.backend_pid, again)
        assert again.join() == 0
    assert stored(owner, patient) == 50
    assert owner.execute("SELECT count(*) FROM biometric_patients WHERE patient_id = %s", (patient,)).fetchone() == (1,)
