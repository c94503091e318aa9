"""Idle and slow clients: does Clarity still answer while they hold connections open?

The attack: SLOW_IDLE (1,000) TCP connections that send nothing, and SLOW_BODIES (50) that
declare a 4 MiB sign-in body (``POST /api/v1/auth/tokens``, which anyone may call and which
reads its body) and send one byte of it every 2 s. A connection the server closes is opened
again at once, as an attacker would. Meanwhile a light normal load runs (two clients, each an
authenticated ``GET /api/v1/patients/{id}`` then a 50 ms pause), and two probes time
``GET /health/live`` and the authenticated GET, each every 0.2 s, for SLOW_SECONDS (20) after
2 s of settling. Each configuration is first probed for 5 s without the attack.

Configurations (all four gunicorn workers, ``gunicorn.conf.py`` otherwise as is):
- ``sync``: the default sync workers, clients straight at gunicorn;
- ``gthread``: ``--worker-class gthread --threads 8`` (GUNICORN_CMD_ARGS), clients straight at it;
- ``nginx``: the sync workers behind ``deploy/nginx.conf`` (clarity.localnginx), as make run
  serves them (there over a unix socket, here over a port of 127.0.0.1).

    python -m bench.slow_clients [sync|gthread|nginx ...]   # default: all three

Prints, per configuration and phase, p50/p99 latency of each probe and of the load; a request
that fails or takes over 5 s (the client timeout) counts as 5 s and as failed. Its own cluster
under ``.var/bench-slow`` (stopped after); gunicorn's logs there too. Every socket and process
it opens is closed on the way out, error or not.
"""
from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import sys
import threading
import time

import requests

from bench import seed
from bench.server import Gunicorn
from clarity import localnginx, localpg

BASE = localpg.VAR / "bench-slow"
IDLE = int(os.environ.get("SLOW_IDLE", "1000"))
BODIES = int(os.environ.get("SLOW_BODIES", "50"))
SECONDS = float(os.environ.get("SLOW_SECONDS", "20"))
QUIET_SECONDS, SETTLE_SECONDS = 5.0, 2.0
WORKERS = 4
CLIENT_TIMEOUT = 5.0
PROBE_PERIOD, LOAD_PAUSE, TRICKLE_PERIOD = 0.2, 0.05, 2.0
CONFIGURATIONS = {
    "sync": {},
    "gthread": {"GUNICORN_CMD_ARGS": "--worker-class gthread --threads 8"},
    "nginx": {"CLARITY_PROXY_COUNT": "1"},
}
SLOW_HEAD = (b"POST /api/v1/auth/tokens HTTP/1.1\r\nHost: clarity\r\nContent-Type: application/json\r\n"
             b"Content-Length: 4194304\r\n\r\n{")


def raise_open_file_limit(needed: int) -> None:
    """Lift this process's soft limit on open files to ``needed`` (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Attack:
    """``idle`` silent connections and ``bodies`` slow sign-in bodies to ``address``, kept open
    (reopened when the server closes one) by a thread until ``close()``."""

    def __init__(self, address: tuple[str, int], idle: int, bodies: int):
        self.address = address
        self.reopened = 0
        self._stop = threading.Event()
        self._poll = select.epoll()
        self._sockets: dict[int, tuple[socket.socket, bool]] = {}
        for n in range(idle + bodies):
            self._open(slow=n >= idle)
        self._thread = threading.Thread(target=self._hold, daemon=True)
        self._thread.start()

    @property
    def open_count(self) -> int:
        return len(self._sockets)

    def _open(self, slow: bool) -> None:
        try:
            sock = socket.create_connection(self.address, timeout=CLIENT_TIMEOUT)
            if slow:
                sock.sendall(SLOW_HEAD)
        except OSError:
            return  # counted as missing from open_count; retried by _hold
        sock.setblocking(False)
        self._sockets[sock.fileno()] = (sock, slow)
        self._poll.register(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)

    def _drop(self, fd: int) -> bool:
        sock, slow = self._sockets.pop(fd)
        self._poll.unregister(fd)
        sock.close()
        return slow

    def _hold(self) -> None:
        wanted_slow = sum(slow for _, slow in self._sockets.values())
        wanted = len(self._sockets)
        next_trickle = time.monotonic() + TRICKLE_PERIOD
        while not self._stop.is_set():
            # Readable means the server answered (408, 413) or closed: either way, open another.
            for fd, _ in self._poll.poll(0.2):
                if fd in self._sockets:
                    self.reopened += 1
                    self._open(slow=self._drop(fd))
            if time.monotonic() >= next_trickle:
                next_trickle += TRICKLE_PERIOD
                for fd, (sock, slow) in list(self._sockets.items()):
                    if slow:
                        try:
                            sock.send(b" ")
                        except OSError:
                            self.reopened += 1
                            self._open(slow=self._drop(fd))
            missing_slow = wanted_slow - sum(slow for _, slow in self._sockets.values())
            for n in range(wanted - len(self._sockets)):
                self._open(slow=n < missing_slow)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for fd in list(self._sockets):
            self._drop(fd)
        self._poll.close()


class Timer:
    """Calls ``request()`` repeatedly in a thread, pausing ``pause`` s after each (or keeping a
    ``period``), recording each latency in seconds; failures and timeouts record CLIENT_TIMEOUT."""

    def __init__(self, request, period: float = 0.0, pause: float = 0.0):
        self.request, self.period, self.pause = request, period, pause
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                ok = self.request().status_code == 200
            except requests.RequestException:
                ok = False
            elapsed = time.monotonic() - started
            if not ok:
                self.failures += 1
            self.latencies.append(elapsed if ok else max(elapsed, CLIENT_TIMEOUT))
            self._stop.wait(max(self.pause, self.period - elapsed))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def summary(name: str, timers: list[Timer]) -> str:
    latencies = sorted(l for t in timers for l in t.latencies)
    failures = sum(t.failures for t in timers)
    if not latencies:
        return f"  {name:<24} no requests completed"

    def at(q: float) -> str:
        value = latencies[min(len(latencies) - 1, int(len(latencies) * q))]
        return f"{value * 1e3:8.1f}" if value < CLIENT_TIMEOUT else f"{'>=5000':>8}"
    return f"  {name:<24} n={len(latencies):4d}  failed={failures:4d}  p50 {at(0.5)} ms  p99 {at(0.99)} ms"


def measure(url: str, headers: dict, patient_id: str, seconds: float) -> list[str]:
    """Probe health and the GET every PROBE_PERIOD under the light load for ``seconds``."""
    def get():
        return requests.get(f"{url}/api/v1/patients/{patient_id}", headers=headers, timeout=CLIENT_TIMEOUT)

    def live():
        return requests.get(f"{url}/health/live", timeout=CLIENT_TIMEOUT)

    load = [Timer(get, pause=LOAD_PAUSE) for _ in range(2)]
    probes = {"GET /health/live": Timer(live, period=PROBE_PERIOD),
              "GET /patients/{id}": Timer(get, period=PROBE_PERIOD)}
    time.sleep(seconds)
    for timer in [*load, *probes.values()]:
        timer.stop()
    return [summary(name, [t]) for name, t in probes.items()] + [summary("light load (GET)", load)]


@contextlib.contextmanager
def configuration(name: str, env: dict):
    """Serve the configuration ``name``; yields its base URL."""
    server = Gunicorn("wsgi:app", {**env, **CONFIGURATIONS[name]}, BASE / f"gunicorn-{name}.log", WORKERS)
    try:
        server.wait_until_ok("/health/ready")
        if name != "nginx":
            yield server.url
            return
        port = localpg.free_port()
        with localnginx.running(f"127.0.0.1:{port}", f"127.0.0.1:{server.port}"):
            yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def run(name: str, env: dict, seeded: seed.Seeded) -> None:
    headers = {"Authorization": f"Bearer {seeded.token}"}
    patient_id = seeded.patient_ids[0]
    with configuration(name, env) as url:
        print(f"\n{name}: {url}", flush=True)
        print(f" quiet, {QUIET_SECONDS:g} s:", flush=True)
        print("\n".join(measure(url, headers, patient_id, QUIET_SECONDS)), flush=True)
        host, port = url.removeprefix("http://").rsplit(":", 1)
        started = time.monotonic()
        attack = Attack((host, int(port)), IDLE, BODIES)
        try:
            print(f" attacked: {attack.open_count} connections open in {time.monotonic() - started:.1f} s; "
                  f"{SECONDS:g} s:", flush=True)
            time.sleep(SETTLE_SECONDS)
            lines = measure(url, headers, patient_id, SECONDS)
            print("\n".join(lines), flush=True)
            print(f"  attack connections closed by the server and reopened: {attack.reopened}", flush=True)
        finally:
            attack.close()


def main() -> None:
    names = sys.argv[1:] or list(CONFIGURATIONS)
    unknown = set(names) - set(CONFIGURATIONS)
    if unknown:
        sys.exit(f"unknown configuration(s) {sorted(unknown)}; choose from {list(CONFIGURATIONS)}")
    raise_open_file_limit(IDLE + BODIES + 1024)
    print(f"slow clients: {IDLE} idle + {BODIES} slow-body connections, {SECONDS:g} s each, "
          f"gunicorn x{WORKERS}, {os.cpu_count()} CPUs", flush=True)
    cluster = localpg.Cluster(BASE)
    cluster.start()
    try:
        env = {**seed.recreate(cluster), **seed.keys_env()}
        seeded = seed.seed(env, 100)
        app_env = {**os.environ, **env, "CLARITY_ENV": "development"}
        for name in names:
            run(name, app_env, seeded)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
