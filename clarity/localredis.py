"""A local redis-server for development and tests; production sets REDIS_URL.

Bound to 127.0.0.1 on a free port, keeping nothing on disk (it holds only rate-limit counters),
installed with apt-get when missing. ``make run`` keeps one under ``.var/redis``; tests start
their own.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from clarity import localpg

_PATH = os.pathsep.join((os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"))


def ensure_installed() -> str:
    """The path of redis-server, installing Debian's package (not its service, which would
    take port 6379) when it is missing."""
    found = shutil.which("redis-server", path=_PATH)
    if found:
        return found
    localpg.apt_install("redis-server")
    return shutil.which("redis-server", path=_PATH) or sys.exit("apt-get installed redis-server but it is not on PATH")


class Redis:
    """A redis-server under ``base`` (its pid, port and log), started by ``start``."""

    def __init__(self, base: Path):
        self.base = base
        self.pid_file = base / "redis.pid"
        self.port_file = base / "port"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port_file.read_text().strip()}/0"

    def start(self, timeout: float = 10.0, *, attached: bool = False) -> str:
        """Start the server unless it runs already; return its URL once it answers.

        Detached (make run) it outlives us until ``stop``; ``attached`` (tests) it is our child
        and dies with us, however we die."""
        if self.running():
            return self.url
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o700)
        self.port_file.write_text(str(localpg.free_port()))
        port = self.port_file.read_text().strip()
        argv = [ensure_installed(), "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
                "--daemonize", "no" if attached else "yes", "--pidfile", str(self.pid_file),
                "--dir", str(self.base), "--logfile", str(self.base / "redis.log"), "--protected-mode", "yes"]
        if attached:
            self._child = subprocess.Popen(localpg.dies_with_parent(argv), stdout=subprocess.DEVNULL)
        else:
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self._answers(int(port)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self.base / 'redis.log'}")
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        localpg.stop_pid_file(self.pid_file, b"redis-server")
        child = getattr(self, "_child", None)
        if child is not None:
            child.wait(timeout=10)

    def running(self) -> bool:
        pid = self._pid()
        return pid is not None and self._alive(pid) and self.port_file.exists()

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @staticmethod
    def _answers(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
