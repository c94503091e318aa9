"""End to end: documents through gunicorn (and nginx in front of it), over HTTP.

A 25 MiB upload and its download round-trip byte-exact while the worker that serves them grows by
far less than the file (the figures are printed: run with -s); a chunked upload is read without a
Content-Length; a download whose stored content was altered is cut short, never altered; nginx
keeps documents in memory, never in its temporary files.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests

from clarity.security.chunks import CHUNK_BYTES
from tests.conftest import patient_body
from tests.e2e.conftest import E2E_PASSWORD, gunicorn_workers

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
SIZE = 25 * MiB


def sign_in(base, email) -> dict:
    login = requests.post(f"{base}/api/v1/auth/tokens", json={"email": email, "password": E2E_PASSWORD}, timeout=10)
    assert login.status_code == 201, login.text
    return {"Authorization": f"Bearer {login.json()['token']}"}


def new_patient(base, headers) -> str:
    created = requests.post(f"{base}/api/v1/patients", json=patient_body(), headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def upload(base, headers, patient_id, data, filename="scan.pdf"):
    return requests.post(f"{base}/api/v1/patients/{patient_id}/documents", data=data, timeout=120, headers={
        **headers, "Content-Type": "application/pdf", "Content-Disposition": f"attachment; filename={filename}"})


def download(base, headers, document_id, **extra) -> tuple[requests.Response, bytes, bool]:
    """The response, the bytes received, and whether the body ended short of its Content-Length."""
    response = requests.get(f"{base}/api/v1/documents/{document_id}/content", headers={**headers, **extra},
                            stream=True, timeout=120)
    received, cut = bytearray(), False
    try:
        for piece in response.iter_content(CHUNK_BYTES):
            received += piece
    except requests.exceptions.ChunkedEncodingError:  # urllib3's IncompleteRead: the connection was cut
        cut = True
    return response, bytes(received), cut


def pdf(size: int) -> bytes:
    return b"%PDF-1.7\n" + os.urandom(size - 9)


# --- worker memory --------------------------------------------------------------------------------

def workers_of(base) -> list[int]:
    """The pids of the gunicorn workers serving ``base`` (children of its master)."""
    bind = f"CLARITY_BIND={base.removeprefix('http://')}".encode()
    serving = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and bind in (proc / "environ").read_bytes().split(b"\0"):
                serving.append((int(proc.name), int(_status(int(proc.name))["PPid"])))
        except OSError:
            continue
    pids = {pid for pid, _ in serving}
    return [pid for pid, parent in serving if parent in pids]


def _status(pid) -> dict:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def _kib(pid, field) -> int:
    return int(_status(pid)[field].split()[0])


class PeakRss:
    """Each worker's peak RSS during a block, in KiB above its RSS when the block began: from
    VmHWM after resetting it (/proc/<pid>/clear_refs), or else by sampling VmRSS every 2 ms; and
    how long the block took (printed, never asserted)."""

    def __init__(self, pids):
        self.pids, self.growth = pids, {}

    def __enter__(self):
        self.began = time.monotonic()
        self.start = {pid: _kib(pid, "VmRSS") for pid in self.pids}
        try:
            for pid in self.pids:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            self.sampler = None
        except OSError:
            self.peaks, self.stop = dict(self.start), threading.Event()
            self.sampler = threading.Thread(target=self._sample, daemon=True)
            self.sampler.start()
        return self

    def _sample(self):
        while not self.stop.is_set():
            for pid in self.pids:
                self.peaks[pid] = max(self.peaks[pid], _kib(pid, "VmRSS"))
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.seconds = time.monotonic() - self.began
        if self.sampler is None:
            self.peaks = {pid: _kib(pid, "VmHWM") for pid in self.pids}
        else:
            self.stop.set()
            self.sampler.join()
        self.growth = {pid: self.peaks[pid] - self.start[pid] for pid in self.pids}

    @property
    def most(self) -> tuple[int, int]:
        """(the largest growth, that worker's peak), in KiB: the worker that served the request."""
        pid = max(self.growth, key=self.growth.get)
        return self.growth[pid], self.peaks[pid]


def test_a_25_mib_document_round_trips_through_gunicorn_in_bounded_worker_memory(gunicorn, provider_email):
    headers = sign_in(gunicorn, provider_email)
    patient_id = new_patient(gunicorn, headers)
    workers = workers_of(gunicorn)
    assert len(workers) == 2
    for _ in range(4):  # both workers warmed up: imports, pools and buffers in place
        warm = upload(gunicorn, headers, patient_id, pdf(3 * CHUNK_BYTES)).json()
        download(gunicorn, headers, warm["id"])

    data = pdf(SIZE)
    with PeakRss(workers) as during_upload:
        created = upload(gunicorn, headers, patient_id, data)
    assert created.status_code == 201, created.text
    document = created.json()
    with PeakRss(workers) as during_download:
        response, received, cut = download(gunicorn, headers, document["id"])

    assert response.status_code == 200 and not cut
    assert response.headers["Content-Length"] == str(SIZE)
    assert hashlib.sha256(received).hexdigest() == document["sha256"] == hashlib.sha256(data).hexdigest()
    assert response.headers["ETag"] == f'"{document["sha256"]}"'
    for name, peak in (("upload", during_upload), ("download", during_download)):
        growth, top = peak.most
        print(f"\n{name} of {SIZE // MiB} MiB in {peak.seconds:.2f} s: the serving worker grew by "
              f"{growth / 1024:.1f} MiB (peak RSS {top / 1024:.1f} MiB)")
        assert growth * 1024 < 3 * SIZE, (name, growth)


def test_a_chunked_upload_without_a_length_is_read_and_a_range_served(gunicorn, provider_email):
    headers = sign_in(gunicorn, provider_email)
    patient_id = new_patient(gunicorn, headers)
    data = pdf(5 * MiB + 123)  # past the app's 4 MiB bound for JSON bodies
    created = upload(gunicorn, headers, patient_id, (data[i:i + 100_000] for i in range(0, len(data), 100_000)))
    assert created.status_code == 201, created.text
    response, received, _ = download(gunicorn, headers, created.json()["id"], Range="bytes=4194300-4194400")
    assert response.status_code == 206 and received == data[4194300:4194401]


def test_a_download_of_altered_content_is_cut_short_by_the_server(gunicorn, provider_email, server, database):
    headers = sign_in(gunicorn, provider_email)
    data = pdf(4 * CHUNK_BYTES)
    document = upload(gunicorn, headers, new_patient(gunicorn, headers), data).json()
    with psycopg.connect(server.url(database), autocommit=True) as owner:
        owner.execute("UPDATE document_chunks SET sealed = overlay(sealed placing '\\x00'::bytea from 100) "
                      "WHERE document_id = %s AND index = 2", (document["id"],))
    response, received, cut = download(gunicorn, headers, document["id"])
    assert response.status_code == 200 and response.headers["Content-Length"] == str(len(data))
    assert cut and received == data[:2 * CHUNK_BYTES]
    healthy = requests.get(f"{gunicorn}/health/live", timeout=10)  # the worker lives on
    assert healthy.status_code == 200


def test_nginx_keeps_documents_out_of_its_temporary_files(nginx, provider_email):
    headers = sign_in(nginx, provider_email)
    data = pdf(SIZE)
    created = upload(nginx, headers, new_patient(nginx, headers), data)
    assert created.status_code == 201, created.text
    response, received, cut = download(nginx, headers, created.json()["id"])
    assert response.status_code == 200 and not cut and received == data
    too_large = upload(nginx, headers, new_patient(nginx, headers), pdf(SIZE + MiB))
    assert too_large.status_code == 413 and too_large.headers["Content-Type"] == "application/problem+json"
    log = _nginx_error_log(nginx).read_text()
    assert "temporary file" not in log, log


def _nginx_error_log(base) -> Path:
    """The error log of the nginx listening at ``base`` (from its command line and configuration)."""
    listen = f"listen {base.removeprefix('http://')};"
    for proc in Path("/proc").iterdir():
        try:  # nginx rewrites its title: "nginx: master process /usr/sbin/nginx -p … -c … -e …"
            argv = (proc / "cmdline").read_bytes().decode().replace("\0", " ").split()
        except (OSError, UnicodeDecodeError):
            continue
        if proc.name.isdigit() and "-c" in argv and "-e" in argv and "nginx" in argv[0]:
            config = Path(argv[argv.index("-c") + 1])
            if config.exists() and re.search(re.escape(listen), config.read_text()):
                return Path(argv[argv.index("-e") + 1])
    raise AssertionError(f"no nginx found listening at {base}")


def test_a_worker_killed_mid_upload_stores_nothing_and_its_retry_is_done_once(start_gunicorn, provider_email,
                                                                              server, database):
    """The server stopped mid-request: the upload's one transaction dies with its worker, so
    nothing of the document is kept (nor its Idempotency-Key), a new worker serves the next
    request, and the retry with the same key stores the document once."""
    served = start_gunicorn(WEB_CONCURRENCY="1", CLARITY_RATE_LIMIT_ENABLED="0")
    base = next(served)
    try:
        headers = sign_in(base, provider_email)
        patient_id = new_patient(base, headers)
        (worker,) = gunicorn_workers(base)
        data, half_sent, killed = pdf(8 * MiB), threading.Event(), threading.Event()

        def body():  # chunked: the worker reads, enciphers and writes as the pieces arrive
            for i in range(0, len(data), 256 * 1024):
                if i == 4 * MiB:
                    half_sent.set()
                    killed.wait(30)
                yield data[i:i + 256 * 1024]

        def kill_when_half_sent():
            half_sent.wait(30)
            with psycopg.connect(server.url(database), autocommit=True) as owner:
                deadline = time.monotonic() + 10
                while not owner.execute("SELECT 1 FROM pg_stat_activity WHERE datname = %s AND state = "
                                        "'idle in transaction' AND query LIKE %s",
                                        (database, "%document_chunks%")).fetchall():
                    assert time.monotonic() < deadline, "the upload never began writing chunks"
                    time.sleep(0.05)
            os.kill(worker, 9)
            killed.set()

        killer = threading.Thread(target=kill_when_half_sent)
        killer.start()
        keyed = {**headers, "Idempotency-Key": '"upload-after-a-crash"'}
        with pytest.raises(requests.exceptions.ConnectionError):
            upload(base, keyed, patient_id, body())
        killer.join()

        with psycopg.connect(server.url(database), autocommit=True) as owner:
            deadline = time.monotonic() + 10
            while owner.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state LIKE "
                                "'idle in transaction%%'", (database,)).fetchone()[0]:
                assert time.monotonic() < deadline, "the dead worker's transaction stayed open"
                time.sleep(0.05)
            assert owner.execute("SELECT count(*) FROM documents WHERE patient_id = %s", (patient_id,)).fetchone() == (0,)
            assert owner.execute("SELECT count(*) FROM document_chunks").fetchone() == (0,)
        deadline = time.monotonic() + 30
        while requests.get(f"{base}/api/v1/patients/{patient_id}/documents", headers=headers,
                           timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "no worker came back"
            time.sleep(0.2)

        retried, replayed = upload(base, keyed, patient_id, data), upload(base, keyed, patient_id, data)
        assert retried.status_code == replayed.status_code == 201, retried.text
        assert "Idempotent-Replayed" not in retried.headers and replayed.headers["Idempotent-Replayed"] == "true"
        assert replayed.content == retried.content
        with psycopg.connect(server.url(database), autocommit=True) as owner:
            assert owner.execute("SELECT count(*) FROM documents WHERE patient_id = %s", (patient_id,)).fetchone() == (1,)
    finally:
        served.close()
