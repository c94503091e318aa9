"""Biometric ingestion throughput, in readings (rows) per second, five ways, same readings:

1. ``POST /api/v1/patients/{id}/biometrics`` with 10,000-reading batches over HTTP to Clarity
   under gunicorn (sync workers, one client sending one batch after another: JSON parsing,
   validation, token check, scope, COPY, dedupe, alerts, audit, row-level security);
2. straight through the repository: ``BiometricRepository.add_many`` (COPY into the staging
   table + one INSERT … SELECT that also raises alerts), one unit of work per batch;
3. the row-at-a-time baseline: psycopg ``executemany`` of ``insert_biometric_reading`` (a plain
   INSERT … ON CONFLICT DO NOTHING, no alerts), one transaction per batch;
4. a raw binary ``COPY`` of the batch straight into ``biometric_readings`` as its owner (a
   superuser here, so without row-level security, which COPY FROM refuses for the app role;
   no dedupe: a duplicate fails): what the table itself (partitions, keys, checks, triggers) costs;
5. the reference: a raw binary ``COPY`` into a plain table with the same columns and only a
   unique index on the dedupe key (the columns of biometric_readings_reading_key, read from
   the catalog): the physical cost of storing deduplicated readings;

each for BENCH_SECONDS (default 10) after one warm-up batch, every batch new readings (nothing
is a duplicate), one transaction per batch, on 127.0.0.1 only, as the app's least-privileged
role with row-level security on (4 and 5: as the owner). Then the ratios: the target is HTTP
>= 50 % of the reference. Values stay inside the default alert rules, so no alerts are raised.

    python -m bench.ingest   # standalone: its own cluster under .var/bench-ingest (stopped after)

From bench/run.py: ``rows = ingest.run(env, seconds=SECONDS, pg_pid=pg_pid)`` with ``env`` the
database URLs and keys of a migrated database (seed.recreate + seed.keys_env); it creates its
own provider and patients and starts (and stops) its own gunicorn. ``print_rows(rows)`` prints
them; the rows (a dict by scenario key) have bench.run.Row's fields.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import secrets
import time
import uuid
from pathlib import Path

import psycopg
import requests
from psycopg import sql

from bench.seed import patient_phi
from bench.server import Gunicorn, Row
from clarity import config, create_app, localpg
from clarity.repositories.biometrics import Reading
from clarity.security.access import Actor, new_token
from clarity.security.crypto import generate_key

SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
BATCH = 10_000
WORKERS = 2
BASE = localpg.VAR / "bench-ingest"
DATABASE = "clarity_bench_ingest"
# Mid-range values of each kind (inside the default alert rules).
VALUES = {"heart_rate": 72.0, "bp_systolic": 118.0, "bp_diastolic": 76.0, "spo2": 97.0, "temperature": 36.8,
          "respiratory_rate": 14.0, "glucose": 98.0, "weight": 71.5, "steps": 420.0}
UNITS = {"heart_rate": "bpm", "bp_systolic": "mmHg", "bp_diastolic": "mmHg", "spo2": "%", "temperature": "°C",
         "respiratory_rate": "breaths/min", "glucose": "mg/dL", "weight": "kg", "steps": "steps"}
TARGET = 0.50  # HTTP ingest / raw COPY into the plain table with the dedupe key's unique index
PLAIN_TABLE = "bench_plain_readings"
COPY_COLUMNS = ("patient_id", "recorded_at", "value", "kind", "unit", "source_device")
COPY_TYPES = ("uuid", "timestamptz", "float8", "text", "text", "text")
# The dedupe key's columns, in its order, as the catalog has them.
KEY_COLUMNS = """
SELECT array_agg(a.attname::text ORDER BY k.ord)
  FROM pg_constraint c
 CROSS JOIN unnest(c.conkey) WITH ORDINALITY AS k (attnum, ord)
  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
 WHERE c.conrelid = 'biometric_readings'::regclass AND c.conname = 'biometric_readings_reading_key'
"""


class Batches:
    """Endless distinct 10,000-reading batches: every reading one second apart, going back in
    time from an hour ago (10 s at 100,000 rows/s reaches back about 12 days)."""

    def __init__(self):
        self.start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=1)
        self.n = 0
        self.kinds = list(VALUES)

    def next(self) -> list[Reading]:
        batch = []
        for _ in range(BATCH):
            kind = self.kinds[self.n % len(self.kinds)]
            batch.append(Reading(kind, VALUES[kind] + (self.n % 5) * 0.1, UNITS[kind],
                                 self.start - dt.timedelta(seconds=self.n), f"bench-{self.n % 16:02d}"))
            self.n += 1
        return batch


def as_json(batch: list[Reading]) -> bytes:
    return json.dumps([{"kind": r.kind, "value": r.value, "unit": r.unit, "recorded_at": r.recorded_at.isoformat(),
                        "source_device": r.source_device} for r in batch]).encode()


def _cpu_seconds(pid: int | None) -> float:
    from bench import cpu
    return cpu.tree_seconds(pid) if pid else 0.0


def measure(scenario: str, send, batches: Batches, seconds: float, *, app_pid=None, pg_pid=None,
            prepare=lambda batch: batch, note="") -> Row:
    """Send one warm-up batch, then batches until ``seconds`` of sending; only ``send`` is timed
    (batches are built and ``prepare``d outside the clock). App CPU: ``app_pid``'s process tree,
    or this process when None."""
    send(prepare(batches.next()))
    latencies, rows, busy, app_cpu, pg_cpu = [], 0, 0.0, 0.0, 0.0
    while busy < seconds:
        payload = prepare(batches.next())
        app_before = _cpu_seconds(app_pid) if app_pid else time.process_time()
        pg_before = _cpu_seconds(pg_pid)
        started = time.perf_counter()
        stored = send(payload)
        elapsed = time.perf_counter() - started
        app_cpu += (_cpu_seconds(app_pid) if app_pid else time.process_time()) - app_before
        pg_cpu += _cpu_seconds(pg_pid) - pg_before
        if stored != BATCH:
            raise RuntimeError(f"{scenario}: stored {stored} of {BATCH}")
        latencies.append(elapsed)
        rows += stored
        busy += elapsed
    latencies.sort()
    n = len(latencies)
    return Row(scenario, rows / busy, latencies[n // 2] * 1e3, latencies[min(n - 1, int(n * 0.99))] * 1e3,
               app_cpu * 1e3 / n, pg_cpu * 1e3 / n if pg_pid else float("nan"),
               note or f"{n} batches")


def _setup(clarity) -> tuple[uuid.UUID, str, list[uuid.UUID]]:
    """A provider with a one-hour token and four patients (one per scenario writing readings)."""
    def work(uow):
        user = uow.users.add(email=f"bench-ingest-{uuid.uuid4().hex[:8]}@clarity.test", display_name="Bench ingest",
                             role="provider", password_hash=clarity.passwords.hash(secrets.token_urlsafe(16)))
        token, digest = new_token()
        uow.tokens.add(user_id=user.id, token_hash=digest, max_age_seconds=3600, client_addr=None)
        return user.id, token

    provider_id, token = clarity.db.run(work)
    rng = random.Random(7)
    patients = clarity.db.run(lambda uow: [
        uow.patients.add(provider_id=provider_id, status="active",
                         phi=patient_phi(rng, f"INGEST-{uuid.uuid4().hex[:10]}")).id for _ in range(4)],
        actor=Actor(provider_id, "provider"))
    return provider_id, token, patients


def run(env: dict, *, seconds: float = SECONDS, pg_pid: int | None = None,
        log_dir: Path = BASE) -> dict[str, Row]:
    """Measure the five ways on the migrated database ``env`` describes (DATABASE_URL as the
    app role, CLARITY_MIGRATION_DATABASE_URL, keys); ``pg_pid`` (the postmaster) adds
    PostgreSQL's CPU. Returns one Row per way, by key: http, repository, executemany, copy_table,
    copy_plain."""
    settings = config.from_env({**env, "CLARITY_ENV": "development", "CLARITY_LOG_LEVEL": "WARNING",
                                "CLARITY_ARGON2_TIME_COST": "1", "CLARITY_ARGON2_MEMORY_KIB": "1024"})
    app = create_app(settings)
    clarity = app.extensions["clarity"]
    rows: dict[str, Row] = {}
    server = None
    try:
        provider_id, token, (http_patient, repo_patient, many_patient, copy_patient) = _setup(clarity)
        actor = Actor(provider_id, "provider")
        batches = Batches()

        server = Gunicorn("wsgi:app", {**os.environ, **env, "CLARITY_ENV": "development", "CLARITY_LOG_LEVEL": "WARNING",
                                       "CLARITY_RATE_LIMIT_ENABLED": "0"},
                          log_dir / "gunicorn-ingest.log", WORKERS)
        server.wait_until_ok()
        session = requests.Session()
        session.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/json"})

        def post(body: bytes) -> int:
            response = session.post(f"{server.url}/api/v1/patients/{http_patient}/biometrics", data=body, timeout=60)
            if response.status_code != 201:
                raise RuntimeError(f"POST answered {response.status_code}: {response.text[:300]}")
            return response.json()["stored"]

        print("running ingest over HTTP ...", flush=True)
        rows["http"] = measure(f"POST …/biometrics ({BATCH:,}/request), gunicorn", post, batches, seconds,
                               app_pid=server.proc.pid, pg_pid=pg_pid, prepare=as_json)
        server.stop()

        print("running ingest through the repository (COPY) ...", flush=True)
        rows["repository"] = measure("repository add_many (COPY + INSERT…SELECT)", lambda batch: clarity.db.run(
            lambda uow: uow.biometrics.add_many(repo_patient, batch).stored, actor=actor), batches, seconds,
            pg_pid=pg_pid)

        print("running ingest with executemany ...", flush=True)
        rows["executemany"] = _executemany_row(clarity, env["DATABASE_URL"], actor, many_patient, batches, seconds,
                                               pg_pid)

        owner_url = env["CLARITY_MIGRATION_DATABASE_URL"]
        print("running raw COPY into biometric_readings ...", flush=True)
        rows["copy_table"] = _copy_row("raw COPY into biometric_readings (owner)", owner_url, "biometric_readings",
                                       copy_patient, batches, seconds, pg_pid)
        print("running raw COPY into a plain table with the dedupe key's unique index ...", flush=True)
        rows["copy_plain"] = _copy_row("raw COPY into plain table + unique dedupe key", owner_url, PLAIN_TABLE,
                                       copy_patient, batches, seconds, pg_pid)
    finally:
        if server is not None:
            server.stop()
        clarity.db.close()
    return rows


def _executemany_row(clarity, url, actor, patient_id, batches, seconds, pg_pid) -> Row:
    statement = clarity.db.queries.biometrics.insert_biometric_reading.sql
    set_actor = clarity.db.queries.context.set_actor_context.sql

    with psycopg.connect(url, autocommit=True) as conn:
        def send(params: list[dict]) -> int:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(set_actor, {"actor_id": str(actor.id), "actor_role": actor.role, "request_id": ""})
                cur.executemany(statement, params)
                return cur.rowcount

        def prepare(batch: list[Reading]) -> list[dict]:
            return [{"patient_id": patient_id, **r._asdict()} for r in batch]

        return measure("executemany INSERT (row at a time, no alerts)", send, batches, seconds,
                       pg_pid=pg_pid, prepare=prepare)


def _copy_row(scenario, owner_url, table, patient_id, batches, seconds, pg_pid) -> Row:
    """Raw binary COPY of each batch into ``table`` as the owner, one transaction per batch.
    PLAIN_TABLE is (re)created first, with biometric_readings' columns and defaults but no
    constraint, partition, policy or trigger, and only a unique index on the dedupe key's
    columns; it is dropped afterwards."""
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS)))
    with psycopg.connect(owner_url, autocommit=True) as conn:
        if table == PLAIN_TABLE:
            key = conn.execute(KEY_COLUMNS).fetchone()[0]
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE biometric_readings INCLUDING DEFAULTS)").format(
                sql.Identifier(table)))
            conn.execute(sql.SQL("CREATE UNIQUE INDEX ON {} ({})").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, key))))

        def send(params: list[tuple]) -> int:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(copy_sql) as copy:
                    copy.set_types(COPY_TYPES)
                    for row in params:
                        copy.write_row(row)
                return cur.rowcount

        def prepare(batch: list[Reading]) -> list[tuple]:
            return [(patient_id, r.recorded_at, r.value, r.kind, r.unit, r.source_device) for r in batch]

        try:
            return measure(scenario, send, batches, seconds, pg_pid=pg_pid, prepare=prepare)
        finally:
            if table == PLAIN_TABLE:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def print_rows(rows: dict[str, Row]) -> None:
    print()
    print(f"{'scenario':<52} | {'rows/s':>9} | {'p50 ms':>8} | {'p99 ms':>8} | {'app CPU ms':>10} | "
          f"{'pg CPU ms':>9} | note")
    print("-" * 118)
    for row in rows.values():
        print(f"{row.scenario:<52} | {row.rate:9.0f} | {row.p50_ms:8.1f} | {row.p99_ms:8.1f} | "
              f"{row.app_cpu_ms:10.1f} | {row.pg_cpu_ms:9.1f} | {row.note}")
    print("(latency and CPU per 10,000-reading batch; app CPU: gunicorn's workers, else this client)")
    http, repo, many = rows["http"], rows["repository"], rows["executemany"]
    ratio = http.rate / rows["copy_plain"].rate
    print(f"\nHTTP batch / raw COPY into plain table + unique dedupe key (rows/s): {ratio:6.2f}  "
          f"(target >= {TARGET:.2f}: {'met' if ratio >= TARGET else 'NOT met'})")
    table = rows["copy_table"]
    print(f"HTTP batch / raw COPY into biometric_readings (rows/s):              {http.rate / table.rate:6.2f}")
    print(f"HTTP batch / repository COPY (rows/s):                               {http.rate / repo.rate:6.2f}")
    print(f"repository COPY / executemany (rows/s):                              {repo.rate / many.rate:6.2f}x")


def main() -> None:
    from bench import cpu

    cluster = localpg.Cluster(BASE)
    cluster.start()
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        env = {**localpg.provision(cluster, DATABASE, secrets.token_urlsafe(18)),
               "CLARITY_DATA_KEYS": f"bench1:{generate_key()}", "CLARITY_ACTIVE_DATA_KEY": "bench1",
               "CLARITY_BLIND_INDEX_KEY": generate_key()}
        print(f"bench ingest: {SECONDS:g}s per way, batches of {BATCH:,}, gunicorn sync x{WORKERS}, "
              f"{os.cpu_count()} CPUs", flush=True)
        print_rows(run(env, seconds=SECONDS, pg_pid=cpu.postmaster_pid(cluster.data)))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
