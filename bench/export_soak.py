"""Soak run of the FHIR export: one patient with a million biometric readings streamed from
``GET /api/v1/patients/{id}/export`` through gunicorn, printing the time, the rate and the
worker's peak resident memory.

    make soak-export                                  # 1,000,000 readings
    EXPORT_SOAK_READINGS=200000 python -m bench.export_soak

It starts its own cluster under .var/bench-export (stopped after, kept for the next run),
seeds a provider and two patients through the repositories, COPYs the readings straight into
biometric_readings as its owner (every kind in turn, 30 s apart), and serves Clarity with one
sync worker (so the worker measured is the one streaming) and rate limits off. A small export
first warms the worker up; then its peak RSS (VmHWM) is reset and the big export streamed and
counted line by line. ``tests/e2e/test_export_stream.py`` runs the same with 50,000 readings.
"""
from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from pathlib import Path

import psycopg
import requests

from bench import cpu, seed
from bench.ingest import UNITS, VALUES
from bench.server import Gunicorn
from clarity import localpg

READINGS = int(os.environ.get("EXPORT_SOAK_READINGS", "1000000"))
BASE = localpg.VAR / "bench-export"
STEP = dt.timedelta(seconds=30)
COPY_READINGS = ("COPY biometric_readings (patient_id, recorded_at, value, kind, unit, source_device) "
                 "FROM STDIN (FORMAT BINARY)")
COPY_TYPES = ("uuid", "timestamptz", "float8", "text", "text", "text")


def copy_readings(owner_url: str, patient_id, count: int) -> None:
    """COPY ``count`` readings of ``patient_id`` into biometric_readings as the table's owner:
    every kind in turn, STEP apart, the newest an hour ago, values inside the default alert
    rules. Fast (no API, no dedupe); a reading that exists already fails the COPY."""
    kinds, patient_id = list(VALUES), uuid.UUID(str(patient_id))
    newest = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=1)
    with psycopg.connect(owner_url, autocommit=True) as conn:
        with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_READINGS) as copy:
            copy.set_types(COPY_TYPES)
            for n in range(count):
                kind = kinds[n % len(kinds)]
                copy.write_row((patient_id, newest - STEP * n, VALUES[kind] + (n % 7) * 0.1, kind, UNITS[kind],
                                f"soak-{n % 4}"))
        conn.execute("VACUUM ANALYZE biometric_readings")


def worker_pids(master_pid: int) -> list[int]:
    """The pids of gunicorn's workers (the master's children)."""
    return cpu._children(master_pid)


def memory_kib(pid: int, field: str) -> int:
    """A /proc/PID/status field in KiB: VmRSS (resident now) or VmHWM (peak resident)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def reset_peak(pid: int) -> None:
    """Reset the process's VmHWM to its current RSS (Linux: ``5`` into clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def stream_export(base_url: str, token: str, patient_id) -> tuple[int, int]:
    """Stream the patient's export, holding one chunk at a time: (lines, bytes). Raises
    requests' ChunkedEncodingError (or a protocol error) when the server cuts the stream."""
    lines = size = 0
    with requests.get(f"{base_url}/api/v1/patients/{patient_id}/export", stream=True, timeout=120,
                      headers={"Authorization": f"Bearer {token}"}) as response:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=256 * 1024):
            lines += chunk.count(b"\n")
            size += len(chunk)
    return lines, size


def main() -> None:
    cluster = localpg.Cluster(BASE)
    cluster.start()
    server = None
    try:
        env = {**seed.recreate(cluster), **seed.keys_env()}
        seeded = seed.seed(env, 2)
        big, small = seeded.patient_ids
        print(f"export soak: copying {READINGS:,} readings ...", flush=True)
        started = time.perf_counter()
        copy_readings(env["CLARITY_MIGRATION_DATABASE_URL"], big, READINGS)
        copy_readings(env["CLARITY_MIGRATION_DATABASE_URL"], small, 100)
        print(f"copied in {time.perf_counter() - started:.1f}s", flush=True)

        server = Gunicorn("wsgi:app", {**os.environ, **env, "CLARITY_ENV": "development", "CLARITY_LOG_LEVEL": "WARNING",
                                       "CLARITY_RATE_LIMIT_ENABLED": "0"}, BASE / "gunicorn-export.log", 1)
        server.wait_until_ok()
        stream_export(server.url, seeded.token, small)
        (worker,) = worker_pids(server.proc.pid)
        postmaster = cpu.postmaster_pid(cluster.data)
        reset_peak(worker)
        before = memory_kib(worker, "VmRSS")
        cpu_before = cpu.tree_seconds(worker), cpu.tree_seconds(postmaster)
        started = time.perf_counter()
        lines, size = stream_export(server.url, seeded.token, big)
        seconds = time.perf_counter() - started
        peak = memory_kib(worker, "VmHWM")
        worker_cpu, pg_cpu = (cpu.tree_seconds(pid) - was for pid, was in zip((worker, postmaster), cpu_before))
        print(f"\nexported {lines:,} lines ({READINGS:,} readings + the Patient), {size / 1e6:,.0f} MB "
              f"in {seconds:.1f}s: {READINGS / seconds:,.0f} readings/s, {size / 1e6 / seconds:.1f} MB/s")
        print(f"CPU: the worker {worker_cpu:.1f}s, PostgreSQL {pg_cpu:.1f}s (wall time varies with the machine's "
              "other load; CPU time less)")
        print(f"worker RSS before {before / 1024:.1f} MiB, peak during the export {peak / 1024:.1f} MiB "
              f"(+{(peak - before) / 1024:.1f} MiB)")
        if lines != READINGS + 1:
            raise SystemExit(f"expected {READINGS + 1:,} lines, got {lines:,}")
    finally:
        if server is not None:
            server.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
