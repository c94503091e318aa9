"""``make bench``: measure Clarity's patient endpoints against the floor and bare psycopg.

One run, one machine, on 127.0.0.1 only:
1. a local cluster under ``.var/bench`` with a freshly recreated ``clarity_bench`` database,
   seeded with BENCH_PATIENTS (10,000) patients of one provider through the repositories;
2. Clarity under gunicorn (``gunicorn.conf.py``, WEB_CONCURRENCY=4) and the floor app
   (``bench/floor_app.py``, same config) driven by wrk for BENCH_SECONDS (10) each:
   ``GET /api/v1/patients/{id}`` with random seeded ids; ``GET /api/v1/patients?limit=50``
   starting at random full pages (the first page, or a ``cursor`` after any seeded patient
   with 51 more after it, so every page has 50 rows and a ``Link``); the floor's
   ``GET /patients/{id}``; and ``POST /api/v1/patients`` with a unique MRN per request;
3. Clarity's GET and list once more right after each, for as long, with row-level security
   disabled on ``patients`` (as its owner; enabled and forced again afterwards, error or not).
   The app's SQL scoping is the same in both runs, so the difference is what the policies cost;
4. the same ``get_patient`` and ``insert_patient`` statements through bare psycopg for as long;
5. a table of throughput, p50/p99 latency and CPU ms per request of the app's and of
   PostgreSQL's processes, then the ratios the design's targets are stated in, the cost of
   row-level security (req/s with ÷ without, CPU ms/req with − without) and the list's app
   CPU ms per row (per request ÷ 50) against the GET's per request.

gunicorn and the cluster are stopped on the way out, error or not.
"""
from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import requests

from clarity import config, localpg
from clarity.api import cursors
from clarity.security.crypto import Keyring
from bench import bare, cpu, seed
from bench.server import Gunicorn, Row

ROOT = localpg.ROOT
HERE = Path(__file__).resolve().parent
BASE = localpg.VAR / "bench"
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
PATIENTS = int(os.environ.get("BENCH_PATIENTS", "10000"))
WORKERS = 4
WRK_LOAD = ["-t2", "-c8"]
WARMUP_SECONDS = 1
GET_TARGET, CPU_TARGET_MS = 0.60, 0.8
PAGE, PER_ROW_TARGET = 50, 4.0
LIST_ENDPOINT = "patients.list_patients"  # the list whose cursors write_list_queries makes




def ensure_wrk() -> str:
    """The wrk binary, installed with apt-get (after an update if needed) when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(install, check=True, env=env)
    return shutil.which("wrk") or sys.exit("wrk is still missing after apt-get install wrk")


def wrk(binary: str, url: str, script: str, args: list[str], seconds: float) -> dict:
    """Run wrk with a script from bench/ against ``url``; return the numbers of its BENCH line."""
    argv = [binary, *WRK_LOAD, f"-d{max(1, round(seconds))}s", "--timeout", "10s", "--latency",
            "-s", str(HERE / script), url, "--", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = next((l for l in done.stdout.splitlines() if l.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def http_row(scenario: str, binary: str, server: Gunicorn, pg_pid: int, script: str, args: list[str],
             warmup_args: list[str] | None = None) -> Row:
    """Warm up, then one measured wrk run with CPU of gunicorn's and PostgreSQL's trees around it."""
    wrk(binary, server.url, script, warmup_args or args, WARMUP_SECONDS)
    app_before, pg_before = cpu.tree_seconds(server.proc.pid), cpu.tree_seconds(pg_pid)
    result = wrk(binary, server.url, script, args, SECONDS)
    app_cpu, pg_cpu = cpu.tree_seconds(server.proc.pid) - app_before, cpu.tree_seconds(pg_pid) - pg_before
    n = max(1, result["requests"])
    failed = result["errors_status"] + result["errors_socket"]
    return Row(scenario, result["requests"] / (result["duration_us"] / 1e6), result["p50_us"] / 1e3,
               result["p99_us"] / 1e3, app_cpu * 1e3 / n, pg_cpu * 1e3 / n,
               f"{failed} failed of {result['requests']}" if failed else "")


def bare_row(scenario: str, pg_pid: int, url: str, measure) -> Row:
    """Run ``measure(conn)`` (a bare.* loop) over a new connection to ``url``, with PostgreSQL's
    CPU measured around it while the connection's backend is alive; app CPU is the client's."""
    # Row-level security needs an actor: this session acts as an admin, so it sees every row.
    with psycopg.connect(url, autocommit=True, options="-c clarity.actor_role=admin") as conn:
        conn.execute("SELECT 1")
        pg_before = cpu.tree_seconds(pg_pid)
        timing = measure(conn)
        pg_cpu = cpu.tree_seconds(pg_pid) - pg_before
    lat = sorted(timing.latencies)
    n = max(1, timing.count)
    return Row(scenario, timing.rate, lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3,
               timing.client_cpu * 1e3 / n, pg_cpu * 1e3 / n, "per statement; app CPU = client")


def write_list_queries(url: str, seeded: seed.Seeded, path: Path, keyring: Keyring) -> None:
    """Query strings of the provider's full list pages, one a line: the first page, and the
    page after each patient that has a full page and one more patient after it (cursors
    signed as the app signs them, with the same keys)."""
    with psycopg.connect(url, options="-c clarity.actor_role=admin") as conn:
        keys = conn.execute("SELECT created_at, id FROM patients WHERE provider_id = %s AND deleted_at IS NULL"
                            " ORDER BY created_at, id", (seeded.provider_id,)).fetchall()
    lines = [f"?limit={PAGE}"] + [f"?limit={PAGE}&cursor={cursors.encode(key, keyring=keyring, endpoint=LIST_ENDPOINT)}"
                                  for key in keys[:-(PAGE + 1)]]
    path.write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def rls_disabled(owner_url: str):
    """Row-level security off on ``patients`` for the block, enabled and forced again after."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        try:
            conn.execute("ALTER TABLE patients NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY")
            yield
        finally:
            conn.execute("ALTER TABLE patients ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY")


def sanity_check(clarity: Gunicorn, floor: Gunicorn, seeded: seed.Seeded, list_query: str) -> None:
    """One request of each kind must succeed before anything is timed."""
    auth = {"Authorization": f"Bearer {seeded.token}"}
    some_id = seeded.patient_ids[0]
    got = requests.get(f"{clarity.url}/api/v1/patients/{some_id}", headers=auth, timeout=10)
    if got.status_code != 200 or not got.json()["mrn"].startswith("SEED-"):
        raise RuntimeError(f"Clarity GET answered {got.status_code}: {got.text[:500]}")
    listed = requests.get(f"{clarity.url}/api/v1/patients{list_query}", headers=auth, timeout=10)
    if listed.status_code != 200 or len(listed.json()) != PAGE or "Link" not in listed.headers:
        raise RuntimeError(f"Clarity list answered {listed.status_code}: {listed.text[:500]}")
    body = seed.patient_phi(random.Random(0), f"CHECK-{uuid.uuid4().hex[:8]}")
    posted = requests.post(f"{clarity.url}/api/v1/patients", json=body, headers=auth, timeout=10)
    if posted.status_code != 201:
        raise RuntimeError(f"Clarity POST answered {posted.status_code}: {posted.text[:500]}")
    floor_got = requests.get(f"{floor.url}/patients/{some_id}", timeout=10)
    if floor_got.status_code != 200:
        raise RuntimeError(f"floor GET answered {floor_got.status_code}: {floor_got.text[:500]}")


def print_report(rows: dict[str, Row]) -> None:
    print()
    print(f"{'scenario':<46} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | "
          f"{'app CPU ms/req':>14} | {'pg CPU ms/req':>13} | note")
    print("-" * 122)
    for row in rows.values():
        print(f"{row.scenario:<46} | {row.rate:8.1f} | {row.p50_ms:7.2f} | {row.p99_ms:7.2f} | "
              f"{row.app_cpu_ms:14.3f} | {row.pg_cpu_ms:13.3f} | {row.note}")
    get, floor, post = rows["get"], rows["floor"], rows["post"]
    bare_get, bare_insert = rows["bare_get"], rows["bare_insert"]
    print()
    ratio = get.rate / floor.rate
    print(f"Clarity GET / floor GET (req/s):            {ratio:6.3f}  "
          f"(target >= {GET_TARGET:.2f}: {'met' if ratio >= GET_TARGET else 'NOT met'})")
    print(f"Clarity GET app CPU ms/req:                 {get.app_cpu_ms:6.3f}  "
          f"(target <= {CPU_TARGET_MS}: {'met' if get.app_cpu_ms <= CPU_TARGET_MS else 'NOT met'})")
    print(f"Clarity GET req/s / bare get_patient/s:     {get.rate / bare_get.rate:6.3f}")
    print(f"Clarity POST req/s / bare insert_patient/s: {post.rate / bare_insert.rate:6.3f}")
    print(f"floor GET req/s / bare get_patient/s:       {floor.rate / bare_get.rate:6.3f}")
    for key, name in (("get", "GET "), ("list", "list")):
        on, off = rows[key], rows[key + "_norls"]
        print(f"RLS cost, {name}: req/s with / without {on.rate / off.rate:6.3f}; CPU ms/req with - without: "
              f"app {on.app_cpu_ms - off.app_cpu_ms:+.3f}, pg {on.pg_cpu_ms - off.pg_cpu_ms:+.3f}")
    per_row = rows["list"].app_cpu_ms / PAGE
    fewer = get.app_cpu_ms / per_row
    print(f"list app CPU ms/row {per_row:.3f} vs GET app CPU ms/req {get.app_cpu_ms:.3f}: {fewer:.1f}x fewer "
          f"(target >= {PER_ROW_TARGET:g}x: {'met' if fewer >= PER_ROW_TARGET else 'NOT met'})")


def main() -> None:
    binary = ensure_wrk()
    print(f"bench: {PATIENTS} patients, {SECONDS:g}s per scenario, gunicorn sync x{WORKERS}, "
          f"wrk {' '.join(WRK_LOAD)}, {os.cpu_count()} CPUs", flush=True)
    cluster = localpg.Cluster(BASE)
    servers: list[Gunicorn] = []
    cluster.start()
    try:
        pg_pid = cpu.postmaster_pid(cluster.data)
        started = time.monotonic()
        env = {**seed.recreate(cluster), **seed.keys_env()}
        seeded = seed.seed(env, PATIENTS)
        print(f"seeded {len(seeded.patient_ids)} patients in {time.monotonic() - started:.1f}s", flush=True)
        ids_file = BASE / "patient-ids.txt"
        ids_file.write_text("\n".join(seeded.patient_ids) + "\n")
        settings = config.from_env(env)
        keyring = Keyring(settings.data_keys, settings.active_data_key, settings.blind_index_key,
                          settings.blind_index_next_key)
        list_file = BASE / "list-queries.txt"
        write_list_queries(env["DATABASE_URL"], seeded, list_file, keyring)

        # A benchmark's few tokens send far more than any person: rate limits off.
        app_env = {**os.environ, **env, "CLARITY_ENV": "development", "CLARITY_RATE_LIMIT_ENABLED": "0"}
        clarity = Gunicorn("wsgi:app", app_env, BASE / "gunicorn-clarity.log", WORKERS)
        servers.append(clarity)
        floor = Gunicorn("bench.floor_app:app", app_env, BASE / "gunicorn-floor.log", WORKERS)
        servers.append(floor)
        clarity.wait_until_ok("/health/ready")
        floor.wait_until_ok(f"/patients/{seeded.patient_ids[0]}")
        sanity_check(clarity, floor, seeded, f"?limit={PAGE}")

        rows: dict[str, Row] = {}
        scenarios = [
            ("get", "Clarity GET /api/v1/patients/{id}", clarity, "get.lua",
             [str(ids_file), "/api/v1/patients/", seeded.token], None),
            ("list", f"Clarity GET /api/v1/patients?limit={PAGE}", clarity, "get.lua",
             [str(list_file), "/api/v1/patients", seeded.token], None),
            ("floor", "floor GET /patients/{id}", floor, "get.lua", [str(ids_file), "/patients/"], None),
            ("post", "Clarity POST /api/v1/patients", clarity, "post.lua",
             [f"W{uuid.uuid4().hex[:8]}", seeded.token], [f"U{uuid.uuid4().hex[:8]}", seeded.token]),
        ]
        for key, title, server, script, args, warmup in scenarios:
            print(f"running {title} ...", flush=True)
            rows[key] = http_row(title, binary, server, pg_pid, script, args, warmup)
            if key in ("get", "list"):
                with rls_disabled(env["CLARITY_MIGRATION_DATABASE_URL"]):
                    print(f"running {title} without RLS ...", flush=True)
                    rows[key + "_norls"] = http_row(f"{title}, RLS off", binary, server, pg_pid, script,
                                                    args, warmup)
        for server in servers:
            server.stop()

        print("running bare psycopg get_patient ...", flush=True)
        rows["bare_get"] = bare_row("bare psycopg get_patient", pg_pid, env["DATABASE_URL"], lambda conn: (
            bare.get_patients(conn, seeded.patient_ids, seeded.provider_id, SECONDS)))
        print("running bare psycopg insert_patient ...", flush=True)
        rows["bare_insert"] = bare_row("bare psycopg insert_patient", pg_pid, env["DATABASE_URL"],
                                       lambda conn: bare.insert_patients(conn, keyring, seeded.provider_id, SECONDS))
        print_report(rows)
        from bench import ingest  # imported here: bench.ingest uses this module's helpers
        print("\nrunning biometric ingestion (HTTP batches, repository COPY, executemany, raw COPY into the table "
              "and into a plain table with the dedupe key's unique index) ...", flush=True)
        ingest.print_rows(ingest.run(env, seconds=SECONDS, pg_pid=pg_pid))
        print(f"\ntotal {time.monotonic() - started:.0f}s; gunicorn logs in {BASE}")
    finally:
        for server in servers:
            server.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
