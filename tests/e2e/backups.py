"""A scratch PostgreSQL cluster that archives its WAL to a pgBackRest repository, and the
restores made from it, for tests/e2e/test_backups.py.

Everything lives in one private directory (mode 700) under the system's temporary directory,
owned by the clusters' OS user (``clarity-pg`` as root, see clarity.localpg) and removed
afterwards: data directories, the server sockets, pgbackrest.conf, the repository, pgBackRest's
log, lock and spool directories. pgBackRest runs as that user, as it must: it reads the data
directory and PostgreSQL runs it as ``archive_command``. The binary is Debian's ``pgbackrest``,
installed with apt-get when missing.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from clarity import localpg

STANZA = "clarity"


def ensure_pgbackrest() -> str:
    """The path of the pgbackrest binary, installing Debian's package when it is missing."""
    found = shutil.which("pgbackrest")
    if found:
        return found
    localpg.apt_install("pgbackrest")
    return shutil.which("pgbackrest") or sys.exit("apt-get installed pgbackrest but it is not on PATH")


@contextlib.contextmanager
def private_directory() -> Iterator[Path]:
    """A new directory of mode 700 the server user owns (reachable however private the checkout
    is), removed with everything in it when the block ends."""
    home = localpg._make_dir(Path(tempfile.mkdtemp(prefix="clarity-backups-")), 0o700, localpg._owner())
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def owned_directory(path: Path) -> Path:
    """``path`` created (mode 700) for the server user; returned."""
    return localpg._make_dir(path, 0o700, localpg._owner())


class ScratchCluster:
    """A PostgreSQL server on ``data`` listening on 127.0.0.1 and a socket in ``socket_dir``,
    trusting every local connection (a test's cluster only). It runs as the server user, as a
    child of this process that gets SIGTERM should this process die.

    ``url`` has the signature of tests.conftest.Server.url, so ``make_settings`` takes it.
    """

    def __init__(self, data: Path, socket_dir: Path):
        self.data, self.socket_dir = data, socket_dir
        self.port = localpg.free_port()
        self.log = socket_dir / f"postgres-{self.port}.log"
        self._process: subprocess.Popen | None = None

    def url(self, database="postgres", user="postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def initdb(self) -> None:
        owned_directory(self.data)
        localpg._run_server_command([str(localpg.ensure_installed() / "initdb"), "-D", str(self.data), "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])

    def start(self, settings: dict[str, str], timeout: float = 30) -> None:
        """Start the server with ``settings`` (``-c name=value`` each, over postgresql.conf) and
        wait until it accepts connections. Raises RuntimeError, with the server's log, when it
        exits or does not answer within ``timeout`` seconds."""
        options = [f"-c{name}={value}" for name, value in settings.items()]
        argv = [str(localpg.ensure_installed() / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-h", "127.0.0.1", "-k", str(self.socket_dir), "-c", "logging_collector=off", *options]
        with open(self.log, "wb") as log:
            # In / for the reason localpg._run_server_command gives.
            self._process = subprocess.Popen(localpg._as_owner(localpg.dies_with_parent(argv)), cwd="/",
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.wait_until(lambda conn: True, timeout, "accept connections")

    def wait_until(self, ready, timeout: float, what: str) -> None:
        """Poll ``ready(superuser connection)`` until it is true; RuntimeError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(psycopg.OperationalError):
                with psycopg.connect(self.url(), autocommit=True, connect_timeout=2) as conn:
                    if ready(conn):
                        return
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {self.port} did not {what}:\n" + self.log.read_text())
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions are ended), SIGKILL if it takes more than 10 s."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


class PgBackRest:
    """A pgBackRest repository in ``home / "repo"`` for the stanza of ``cluster``, configured by
    ``home / "pgbackrest.conf"`` (mode 600, the server user's)."""

    def __init__(self, home: Path, cluster: ScratchCluster):
        self.binary = ensure_pgbackrest()
        self.home, self.repo, self.config = home, home / "repo", home / "pgbackrest.conf"
        localpg._write_private(self.config, render_config(home, cluster))
        owner = localpg._owner()
        if owner:
            os.chown(self.config, owner.pw_uid, owner.pw_gid)

    @property
    def archive_command(self) -> str:
        return f"{self.binary} --config={self.config} --stanza={STANZA} archive-push %p"

    def run(self, command: str, *options: str, timeout: float = 60) -> str:
        """Run a pgBackRest command as the server user; its output. Raises RuntimeError with
        the output and pgBackRest's log when it fails."""
        argv = [self.binary, f"--config={self.config}", f"--stanza={STANZA}", *options, command]
        done = subprocess.run(localpg._as_owner(argv), cwd="/", capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            logs = "".join(p.read_text() for p in sorted((self.home / "log").glob("*.log")))
            raise RuntimeError(f"pgbackrest {command} exited {done.returncode}:\n{done.stdout}{done.stderr}\n{logs}")
        return done.stdout


def render_config(home: Path, cluster: ScratchCluster) -> str:
    """pgbackrest.conf: one repository, uncompressed so the test can search its bytes (production
    compresses with zst and encrypts the repository, see README "Backups")."""
    return f"""\
[global]
repo1-path={home}/repo
repo1-retention-full=2
compress-type=none
start-fast=y
archive-timeout=30
log-path={home}/log
lock-path={home}/lock
spool-path={home}/spool
log-level-console=warn
log-level-file=info

[{STANZA}]
pg1-path={cluster.data}
pg1-port={cluster.port}
pg1-socket-path={cluster.socket_dir}
pg1-user=postgres
"""


def files_holding(directory: Path, needles: list[str]) -> dict[str, list[str]]:
    """Which of ``needles`` (case-insensitive, UTF-8) each file under ``directory`` holds:
    ``{relative path: [needle, …]}``, files holding none left out."""
    wanted = {needle: needle.lower().encode() for needle in needles}
    found = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        content = path.read_bytes().lower()
        hits = [needle for needle, encoded in wanted.items() if encoded in content]
        if hits:
            found[str(path.relative_to(directory))] = hits
    return found
