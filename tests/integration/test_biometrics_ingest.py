"""Biometric ingestion against PostgreSQL: COPY batches, the constraints and partitions of
biometric_readings, the partitions command, and row-level security on readings and alerts."""
from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid

import psycopg
import pytest
from psycopg import errors as pg

from clarity import create_app, queries
from clarity.errors import Invalid
from clarity.repositories.biometrics import BiometricRepository, Reading
from clarity.security.access import Actor
from clarity.services.biometrics import HISTORY_MONTHS, KINDS, month_start
from tests.conftest import make_settings

NOW = dt.datetime.now(dt.timezone.utc)
BASE = (NOW - dt.timedelta(days=1)).replace(microsecond=0)
MAX_BODY = 4 * 1024 * 1024  # clarity/api/__init__.py MAX_CONTENT_LENGTH


def act_as(conn, actor_id, role):
    conn.execute("SELECT set_config('clarity.actor_id', %s, true), set_config('clarity.actor_role', %s, true)",
                 (str(actor_id) if actor_id else "", role or ""))


def raw_insert(conn, patient_id, kind, value, unit=None, at=None, device="raw"):
    """Bypass the API: a plain INSERT as the app role, in a savepoint."""
    with conn.transaction():
        conn.execute("INSERT INTO biometric_readings (patient_id, recorded_at, value, kind, unit, source_device) "
                     "VALUES (%s, %s, %s, %s, %s, %s)",
                     (patient_id, at or BASE, value, kind, unit or KINDS[kind].unit, device))


@pytest.fixture
def patient(provider, create_patient):
    return create_patient(provider)["id"]


class StatementCounter:
    """Counts what goes through psycopg cursors while installed."""

    def __init__(self, monkeypatch):
        self.calls = {"execute": 0, "executemany": 0, "copy": 0}
        for name in self.calls:
            original = getattr(psycopg.Cursor, name)

            def counted(cursor, *args, __name=name, __original=original, **kwargs):
                self.calls[__name] += 1
                return __original(cursor, *args, **kwargs)

            monkeypatch.setattr(psycopg.Cursor, name, counted)


def test_a_10000_reading_batch_fits_the_body_limit_and_is_stored_by_one_copy_not_a_statement_per_row(
        client, conn, provider, patient, monkeypatch):
    batch = [{"kind": "heart_rate", "value": 150 if i % 100 == 0 else 60 + i % 40, "unit": "bpm",
              "recorded_at": (BASE - dt.timedelta(seconds=i, microseconds=123456)).isoformat(),
              "source_device": f"watch-{uuid.UUID(int=i % 7).hex[:12]}"} for i in range(10_000)]
    body = json.dumps(batch).encode()
    assert len(body) < MAX_BODY / 2

    counter = StatementCounter(monkeypatch)
    response = client.post(f"/api/v1/patients/{patient}/biometrics", data=body,
                           headers={**provider.headers, "Content-Type": "application/json"})
    calls = dict(counter.calls)
    monkeypatch.undo()

    assert response.status_code == 201, response.get_json()
    assert response.get_json() == {"received": 10_000, "stored": 10_000, "duplicates": 0, "alerts_raised": 100}
    # token check, patient scope, staging table, emptying it, the INSERT … SELECT, the audit
    # insert; one COPY.
    assert calls == {"execute": 6, "executemany": 0, "copy": 1}
    act_as(conn, provider.id, "provider")
    stored = conn.execute("SELECT count(*) FROM biometric_readings WHERE patient_id = %s", (patient,)).fetchone()
    assert stored == (10_000,)
    assert conn.execute("SELECT count(*) FROM alerts WHERE patient_id = %s", (patient,)).fetchone() == (100,)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_check_constraints_hold_each_kinds_range_and_unit_even_bypassing_the_api(conn, provider, patient, kind):
    """The database's CHECKs and clarity.services.biometrics.KINDS agree, edge for edge."""
    spec = KINDS[kind]
    act_as(conn, provider.id, "provider")
    raw_insert(conn, patient, kind, spec.min_value, device="at-min")
    raw_insert(conn, patient, kind, spec.max_value, device="at-max")
    for value in (math.nextafter(spec.min_value, -math.inf), math.nextafter(spec.max_value, math.inf), math.nan):
        with pytest.raises(pg.CheckViolation) as refused:
            raw_insert(conn, patient, kind, value, device="outside")
        assert refused.value.diag.constraint_name == "biometric_readings_value_check"
    wrong_unit = next(k.unit for k in KINDS.values() if k.unit != spec.unit)
    with pytest.raises(pg.CheckViolation) as refused:
        raw_insert(conn, patient, kind, spec.min_value, unit=wrong_unit, device="wrong-unit")
    assert refused.value.diag.constraint_name == "biometric_readings_unit_check"


def test_the_kind_check_allows_exactly_the_kinds_the_reads_probe(conn):
    """list and summary over all kinds probe the unique key once per kind of KINDS
    (services.biometrics._kinds_of): a kind the database accepted but KINDS lacked would be
    stored and never read."""
    definition = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                              "WHERE conname = 'biometric_readings_kind_check'").fetchone()[0]
    assert set(re.findall(r"'([^']+)'::text", definition)) == set(KINDS)


def test_dedupe_holds_within_a_batch_across_batches_and_keeps_the_first(db, provider, patient):
    actor = Actor(provider.id, "provider")

    def add(readings):
        return db.run(lambda uow: uow.biometrics.add_many(patient, readings).stored, actor=actor)

    first = [Reading("heart_rate", 70.0, "bpm", BASE, "w1"), Reading("heart_rate", 99.0, "bpm", BASE, "w1"),
             Reading("heart_rate", 71.0, "bpm", BASE, "w2"), Reading("spo2", 97.0, "%", BASE, "w1")]
    assert add(first) == 3
    assert add(first + [Reading("heart_rate", 72.0, "bpm", BASE + dt.timedelta(seconds=1), "w1")]) == 1
    rows = db.run(lambda uow: uow.biometrics.list(patient, kinds=KINDS), actor=actor)
    assert sorted((r.kind, r.source_device, r.value) for r in rows) == [
        ("heart_rate", "w1", 70.0), ("heart_rate", "w1", 72.0), ("heart_rate", "w2", 71.0), ("spo2", "w1", 97.0)]


def test_two_batches_in_one_transaction_store_each_once_under_its_own_patient(db, provider, patient, create_patient):
    other = create_patient(provider)["id"]
    actor = Actor(provider.id, "provider")

    def work(uow):
        return (uow.biometrics.add_many(patient, [Reading("weight", 70.0, "kg", BASE, "scale")]).stored,
                uow.biometrics.add_many(other, [Reading("weight", 80.0, "kg", BASE, "scale")]).stored)

    assert db.run(work, actor=actor) == (1, 1)
    for patient_id, value in ((patient, 70.0), (other, 80.0)):
        rows = db.run(lambda uow: uow.biometrics.latest(patient_id, KINDS), actor=actor)
        assert [(r.kind, r.value) for r in rows] == [("weight", value)]


def test_the_database_refuses_an_unknown_kind_and_a_second_copy_of_a_reading(conn, provider, patient):
    act_as(conn, provider.id, "provider")
    raw_insert(conn, patient, "spo2", 97)
    with pytest.raises(pg.UniqueViolation):
        raw_insert(conn, patient, "spo2", 98)
    with pytest.raises(pg.CheckViolation):
        with conn.transaction():
            conn.execute("INSERT INTO biometric_readings (patient_id, recorded_at, value, kind, unit, source_device) "
                         "VALUES (%s, %s, 1, 'mood', 'smiles', 'x')", (patient, BASE))


def test_readings_are_facts_the_app_role_cannot_change_or_delete(conn, provider, patient):
    act_as(conn, provider.id, "provider")
    raw_insert(conn, patient, "weight", 70)
    for statement in ("UPDATE biometric_readings SET value = 71", "DELETE FROM biometric_readings",
                      "TRUNCATE biometric_readings"):
        with pytest.raises(pg.InsufficientPrivilege), conn.transaction():
            conn.execute(statement)
    partition = f"biometric_readings_{BASE:%Y_%m}"
    with pytest.raises(pg.InsufficientPrivilege), conn.transaction():
        conn.execute(f"SELECT count(*) FROM {partition}")


def test_a_reading_no_partition_holds_is_refused_as_recorded_at_out_of_range(db, provider, patient):
    """Past the partitions made ahead (the API refuses the future before this; the repository
    maps PostgreSQL's "no partition" error for whatever gets past it)."""
    far = month_start(NOW, -12)
    with pytest.raises(Invalid) as refused:
        db.run(lambda uow: uow.biometrics.add_many(patient, [Reading("heart_rate", 70.0, "bpm", far, "w")]),
               actor=Actor(provider.id, "provider"))
    assert refused.value.field == "recorded_at" and refused.value.status == 422


def test_partitions_cover_from_24_months_back_to_the_months_ahead(conn):
    partitions = BiometricRepository(conn, queries.load().biometrics).partitions()
    starts = [p.starts_at for p in partitions]
    assert starts[0] <= month_start(NOW, HISTORY_MONTHS)
    for months_ahead in range(0, 4):
        assert month_start(NOW, -months_ahead) in starts
    assert all(a.ends_at == b.starts_at for a, b in zip(partitions, partitions[1:]))  # no gaps
    assert all(p.name == f"biometric_readings_{p.starts_at.astimezone(dt.timezone.utc):%Y_%m}" for p in partitions)


def test_the_partitions_command_is_idempotent_and_adds_the_months_ahead(server, fresh_database, keyring):
    app = create_app(make_settings(server, fresh_database), keyring=keyring)
    runner = app.test_cli_runner()
    first = runner.invoke(args=["biometrics", "partitions", "--months-ahead", "6"])
    assert first.exit_code == 0, first.output
    assert first.output.startswith("created 3 partition(s); 31 cover ")
    again = runner.invoke(args=["biometrics", "partitions", "--months-ahead", "6"])
    assert again.exit_code == 0 and again.output.startswith("created 0 partition(s); 31 cover "), again.output
    with psycopg.connect(server.url(fresh_database)) as conn:
        names = {row[0] for row in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'biometric_readings'::regclass")}
    assert f"biometric_readings_{month_start(NOW, -6):%Y_%m}" in names


def test_the_partitions_command_needs_the_tables_owner(server, test_database, keyring):
    app = create_app(make_settings(server, test_database, migration_database_url=None), keyring=keyring)
    result = app.test_cli_runner().invoke(args=["biometrics", "partitions"])
    assert result.exit_code != 0 and "owner" in result.output


def test_an_unscoped_count_in_a_providers_transaction_sees_only_their_patients_readings_and_alerts(
        client, conn, make_staff, create_patient, admin):
    a, b = make_staff("provider"), make_staff("provider")
    mine, theirs = create_patient(a)["id"], create_patient(b)["id"]
    for staff, patient_id, count in ((a, mine, 3), (b, theirs, 5)):
        batch = [{"kind": "heart_rate", "value": 150, "unit": "bpm", "source_device": "w",
                  "recorded_at": (BASE - dt.timedelta(minutes=m)).isoformat()} for m in range(count)]
        response = client.post(f"/api/v1/patients/{patient_id}/biometrics", json=batch, headers=staff.headers)
        assert response.status_code == 201

    def counts():
        return tuple(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                     for table in ("biometric_readings", "alerts"))

    act_as(conn, a.id, "provider")
    assert counts() == (3, 3)
    act_as(conn, b.id, "provider")
    assert counts() == (5, 5)
    act_as(conn, admin.id, "admin")
    assert counts() >= (8, 8)
    act_as(conn, None, None)
    assert counts() == (0, 0)
    act_as(conn, a.id, "provider")
    with pytest.raises(pg.InsufficientPrivilege), conn.transaction():
        conn.execute("INSERT INTO biometric_readings (patient_id, recorded_at, value, kind, unit, source_device) "
                     "VALUES (%s, %s, 70, 'heart_rate', 'bpm', 'sneaky')", (theirs, BASE))


def test_a_provider_cannot_change_global_alert_rules_even_unscoped(conn, provider, admin):
    act_as(conn, provider.id, "provider")
    assert conn.execute("UPDATE alert_rules SET max_value = 200 WHERE patient_id IS NULL").rowcount == 0
    assert conn.execute("DELETE FROM alert_rules WHERE patient_id IS NULL").rowcount == 0
    assert conn.execute("SELECT count(*) FROM alert_rules WHERE patient_id IS NULL").fetchone()[0] == 7
    act_as(conn, admin.id, "admin")
    assert conn.execute("UPDATE alert_rules SET max_value = 135 "
                        "WHERE kind = 'heart_rate' AND patient_id IS NULL").rowcount == 1
