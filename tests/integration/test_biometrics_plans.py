"""The reads of biometric readings stay served by their one index (migrations/0018: the unique
key (patient_id, kind, recorded_at, source_device) is the table's only index).

On a cloned database with real commits: 72,000 readings of 20 patients over about 50 days
(several monthly partitions), ANALYZEd, so the planner has real statistics. Each query of
sql/biometrics.sql is EXPLAIN ANALYZEd as the app role in a provider's transaction (row-level
security on), with its parameters bound as the app binds them (unprepared: custom plans), and
must read the partitions through the key's index only, never a Seq Scan, and read no more
index entries than it returns (per kind: up to the page's limit for the list, one for the
latest), each index scan bounded by the patient and one kind (and a summary's by its range).
The control: the same statements after dropping the key (in a transaction rolled back) plan
Seq Scans on these very rows, so the index is what the planner chose, not the only option it
had.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid

import psycopg
import pytest

from clarity import queries
from clarity.services.biometrics import KINDS
from tests.conftest import APP_ROLE

Q = queries.load().biometrics
PATIENTS, PER_KIND = 20, 400
STEP = dt.timedelta(hours=3)  # PER_KIND readings of a kind 3 hours apart: 50 days
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
LIMIT = 51  # a page of 50, plus one to know there is a next page (services.biometrics)


@pytest.fixture(scope="module")
def database(server):
    """A cloned database with the readings committed and analyzed; dropped after the module."""
    name = server.create_database()
    try:
        with psycopg.connect(server.url(name), autocommit=True) as owner:
            provider = owner.execute(
                "INSERT INTO users (email, display_name, role, password_hash) "
                "VALUES ('plans@clarity.test', 'Plans', 'provider', 'x') RETURNING id").fetchone()[0]
            patients = [owner.execute(
                "INSERT INTO patients (provider_id, birth_year, mrn_bidx, last_name_bidx, phi, phi_key_id) "
                "VALUES (%s, 1980, %s, %s, 'x', 'test1') RETURNING id",
                (provider, os.urandom(32), os.urandom(32))).fetchone()[0] for _ in range(PATIENTS)]
            owner.execute("""
                INSERT INTO biometric_readings (patient_id, recorded_at, value, kind, unit, source_device)
                SELECT p.id, %(start)s::timestamptz - n * %(step)s::interval, k.value, k.kind, k.unit, 'dev-' || n %% 3
                  FROM unnest(%(patients)s::uuid[]) AS p (id)
                 CROSS JOIN unnest(%(kinds)s::text[], %(units)s::text[], %(values)s::float8[]) AS k (kind, unit, value)
                 CROSS JOIN generate_series(0, %(per_kind)s - 1) AS n
            """, {"start": NOW - dt.timedelta(hours=1), "step": STEP, "patients": patients, "kinds": list(KINDS),
                  "units": [k.unit for k in KINDS.values()], "values": [float(k.min_value) for k in KINDS.values()],
                  "per_kind": PER_KIND})
            owner.execute("ANALYZE biometric_readings")
            owner.execute("ANALYZE patients")
        yield name, provider, patients[0]
    finally:
        server.drop_database(name)


def statements():
    """(label, query, params) of every read of readings, for one patient."""
    all_kinds, one = list(KINDS), ["heart_rate"]
    no_filters = {"recorded_from": None, "recorded_to": None, "after_recorded_at": None, "after_kind": None,
                  "after_source_device": None, "limit": LIMIT}
    middle = NOW - dt.timedelta(days=20)
    cursor = {"after_recorded_at": middle, "after_kind": "spo2", "after_source_device": "dev-1"}
    window = {"recorded_from": NOW - dt.timedelta(days=40), "recorded_to": NOW - dt.timedelta(days=10)}
    return [
        ("list, all kinds", Q.list_biometric_readings, {**no_filters, "kinds": all_kinds}),
        ("list, one kind", Q.list_biometric_readings, {**no_filters, "kinds": one}),
        ("list, all kinds, cursor and window", Q.list_biometric_readings,
         {**no_filters, **cursor, **window, "kinds": all_kinds}),
        ("list, one kind, cursor and window", Q.list_biometric_readings,
         {**no_filters, **cursor, **window, "kinds": one}),
        ("summary by day, all kinds", Q.list_biometric_summary,
         {"kinds": all_kinds, "bucket": "day", "recorded_from": NOW - dt.timedelta(days=30), "recorded_to": NOW}),
        ("summary by hour, one kind", Q.list_biometric_summary,
         {"kinds": one, "bucket": "hour", "recorded_from": NOW - dt.timedelta(days=2), "recorded_to": NOW}),
        ("summary by hour, all kinds, one day", Q.list_biometric_summary,
         {"kinds": all_kinds, "bucket": "hour", "recorded_from": NOW - dt.timedelta(days=3),
          "recorded_to": NOW - dt.timedelta(days=2)}),
        ("latest per kind", Q.list_biometric_latest, {"kinds": all_kinds}),
    ]


def explain(conn, query, params, patient) -> dict:
    row = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {query.sql}", {**params, "patient_id": patient},
                       prepare=False).fetchone()
    plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return plan[0]["Plan"]


def nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def reading_scans(plan: dict) -> list[dict]:
    """The plan nodes that read a partition of biometric_readings."""
    return [n for n in nodes(plan) if n.get("Relation Name", "").startswith("biometric_readings")]


def index_names(node: dict) -> set[str]:
    """The indexes a scan node reads: its own, or its Bitmap Index Scans'."""
    return {n["Index Name"] for n in nodes(node) if "Index Name" in n}


def index_conditions(node: dict) -> list[str]:
    """The conditions a scan node gives its index: its own, or its Bitmap Index Scans'."""
    return [n["Index Cond"] for n in nodes(node) if "Index Cond" in n]


def entries_read(node: dict) -> float:
    return node["Actual Rows"] * node["Actual Loops"] + node.get("Rows Removed by Filter", 0) * node["Actual Loops"]


def act_as_provider(conn, provider):
    conn.execute("SET ROLE " + APP_ROLE)
    conn.execute("SELECT set_config('clarity.actor_id', %s, true), set_config('clarity.actor_role', 'provider', true)",
                 (str(provider),))


@pytest.fixture
def app_conn(server, database):
    """The app role's connection in a provider's transaction, rolled back after the test."""
    name, provider, _ = database
    with psycopg.connect(server.url(name, APP_ROLE)) as conn:
        act_as_provider(conn, provider)
        yield conn
        conn.rollback()


def key_indexes(conn) -> set[str]:
    """The partitions' indexes of the unique key biometric_readings_reading_key."""
    return {row[0] for row in conn.execute(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'biometric_readings_reading_key'::regclass")}


def test_the_unique_key_is_the_tables_only_index(app_conn):
    indexes = {row[0] for row in app_conn.execute(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'biometric_readings'::regclass")}
    assert indexes == {"biometric_readings_reading_key"}
    assert app_conn.execute("SELECT pg_get_indexdef('biometric_readings_reading_key'::regclass)").fetchone()[0] \
        .endswith("(patient_id, kind, recorded_at, source_device)")


@pytest.mark.parametrize("label, query, params", statements(), ids=[s[0] for s in statements()])
def test_each_read_scans_the_partitions_through_the_unique_key_only(app_conn, database, label, query, params):
    _, _, patient = database
    plan = explain(app_conn, query, params, patient)
    scans = reading_scans(plan)
    keys = key_indexes(app_conn)

    assert scans, f"{label}: no partition read at all?\n{json.dumps(plan, indent=1)}"
    assert not [n for n in scans if n["Node Type"] == "Seq Scan"], f"{label}: Seq Scan\n{json.dumps(plan, indent=1)}"
    for scan in scans:
        assert scan["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan"), label
        assert index_names(scan) and index_names(scan) <= keys, (label, index_names(scan))
        # The index scan is bounded by the patient and one kind (the key's first two columns),
        # and a summary's by its time range too: it never steps over other kinds or times.
        [condition] = index_conditions(scan)
        assert "patient_id = " in condition and "(kind = k.kind)" in condition, (label, condition)
        if query is Q.list_biometric_summary:
            assert "recorded_at >= " in condition and "recorded_at < " in condition, (label, condition)
    read = sum(entries_read(n) for n in scans)
    if query is Q.list_biometric_readings:
        # Each kind's probe stops at the page's size: never the patient's history.
        assert 0 < read <= len(params["kinds"]) * (LIMIT + 3), (label, read)
        assert plan["Actual Rows"] == LIMIT, label
    elif query is Q.list_biometric_latest:
        assert read == len(params["kinds"]), (label, read)
    else:
        # A summary reads exactly the readings it aggregates: the index bounds are the filter.
        assert not any(n.get("Rows Removed by Filter") for n in scans), label
        span = params["recorded_to"] - params["recorded_from"]
        expected = len(params["kinds"]) * (span / STEP)
        assert abs(read - expected) <= len(params["kinds"]) * 2, (label, read, expected)


@pytest.mark.parametrize("label, query, params", statements(), ids=[s[0] for s in statements()])
def test_without_the_key_the_planner_would_seq_scan_these_rows(server, database, label, query, params):
    """The control: the data is large enough that, with no usable index, each read is a Seq Scan."""
    name, provider, patient = database
    with psycopg.connect(server.url(name)) as owner:
        owner.execute("SET LOCAL lock_timeout = '5s'")
        owner.execute("ALTER TABLE biometric_readings DROP CONSTRAINT biometric_readings_reading_key")
        act_as_provider(owner, provider)
        plan = explain(owner, query, params, patient)
        owner.rollback()
    assert any(n["Node Type"] == "Seq Scan" for n in reading_scans(plan)), label


def test_the_reads_answer_as_the_whole_history_sorted_would(app_conn, database):
    """The per-kind probes give the same page as sorting every reading of the patient."""
    _, _, patient = database
    everything = app_conn.execute(
        "SELECT kind, value, unit, recorded_at, source_device FROM biometric_readings WHERE patient_id = %s "
        "ORDER BY recorded_at DESC, kind DESC, source_device DESC", (patient,)).fetchall()
    params = {"patient_id": patient, "kinds": list(KINDS), "recorded_from": None, "recorded_to": None,
              "after_recorded_at": None, "after_kind": None, "after_source_device": None, "limit": LIMIT}
    assert Q.list_biometric_readings.all(app_conn, params) == everything[:LIMIT]
    last = everything[LIMIT - 1]
    after = {**params, "after_recorded_at": last[3], "after_kind": last[0], "after_source_device": last[4]}
    assert Q.list_biometric_readings.all(app_conn, after) == everything[LIMIT:2 * LIMIT]
    latest = Q.list_biometric_latest.all(app_conn, {"patient_id": patient, "kinds": list(KINDS)})
    assert latest == sorted({row[0]: row for row in reversed(everything)}.values())
    assert len(latest) == len(KINDS)


def test_another_providers_transaction_reads_none_of_it(server, database):
    """Row-level security under the rewritten reads: another provider's probes find nothing."""
    name, _, patient = database
    with psycopg.connect(server.url(name, APP_ROLE)) as conn:
        act_as_provider(conn, uuid.uuid4())
        for label, query, params in statements():
            assert query.all(conn, {**params, "patient_id": patient}) == [], label
        conn.rollback()
