"""What both benchmarks share: a gunicorn on a free port of 127.0.0.1, and a report row."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from clarity import localpg


@dataclasses.dataclass
class Row:
    """One line of a report: per second (requests, statements or rows), ms latencies, and CPU ms
    per unit (a request, a statement or a batch) of the app's (or client's) and PostgreSQL's processes."""

    scenario: str
    rate: float
    p50_ms: float
    p99_ms: float
    app_cpu_ms: float
    pg_cpu_ms: float
    note: str = ""


class Gunicorn:
    """gunicorn (``gunicorn.conf.py``) serving ``app`` with ``workers`` sync workers, its output in
    ``log``; ``stop()`` is idempotent."""

    def __init__(self, app: str, env: dict, log: Path, workers: int):
        self.port = localpg.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**env, "CLARITY_BIND": f"127.0.0.1:{self.port}", "WEB_CONCURRENCY": str(workers),
               "CLARITY_ACCESS_LOG": "/dev/null"}
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            self.proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", app],
                                         cwd=localpg.ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_until_ok(self, path: str = "/health/ready", headers=None, timeout: float = 30) -> None:
        """Poll ``path`` until it answers 200; raise (naming the log) if it does not in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.proc.returncode}); see {self.log}")
            try:
                if requests.get(self.url + path, headers=headers, timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.url}{path} not 200 after {timeout}s; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
