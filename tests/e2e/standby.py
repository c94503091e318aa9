"""A primary and a streaming standby on local clusters, for failover and read-replica tests
(issue 10).

The standby is a ``pg_basebackup -R`` copy of the primary, with a physical replication slot,
streaming under ``application_name`` STANDBY_NAME. In ``replicated_pair`` the primary names it in
``synchronous_standby_names``, so a commit returns only once the standby has flushed it; in
``asynchronous_pair`` it does not, and the standby is a read replica that may lag. Both
clusters run as localpg's unprivileged server user, in directories laid out as
``localpg.Cluster`` lays them out under a checkout's ``.var/`` (linked to the server user's
directory when we are root, so a checkout in a mode-700 home works).
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import psycopg

from clarity import localpg

STANDBY_NAME = "clarity_standby"


@dataclasses.dataclass
class Pair:
    primary: localpg.Cluster
    standby: localpg.Cluster

    def url(self, user: str, password: str, database: str) -> str:
        """Both hosts, primary first: libpq connects to whichever accepts writes."""
        hosts = ",".join(f"127.0.0.1:{cluster.port}" for cluster in (self.primary, self.standby))
        return f"postgresql://{user}:{password}@{hosts}/{database}?target_session_attrs=read-write"

    def stop_primary_immediately(self) -> None:
        """The realistic failure: every backend killed, no shutdown checkpoint, sockets closed."""
        _pg_ctl(self.primary, "-m", "immediate", "-w", "stop")

    def promote_standby(self) -> None:
        """Promote the standby and return once it accepts writes."""
        _pg_ctl(self.standby, "-w", "-t", "30", "promote")

    def pause_replay(self) -> None:
        """Pause WAL replay on the standby and return once it is paused: it keeps receiving
        the primary's WAL, and what it answers ages from then on."""
        with psycopg.connect(self.standby.url(), autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
            _wait_for(lambda: conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] == "paused",
                      "the standby's replay never paused")

    def wait_until_replayed(self, timeout: float = 15) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary.url(), autocommit=True) as primary:
            written = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        with psycopg.connect(self.standby.url(), autocommit=True) as conn:
            _wait_for(lambda: conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                           (written,)).fetchone()[0],
                      f"the standby has not replayed up to {written}", timeout)

    def stop_standby(self) -> None:
        _pg_ctl(self.standby, "-m", "immediate", "-w", "stop")

    def wait_until_synchronous(self, timeout: float = 15) -> None:
        """Wait until the primary reports the standby streaming as its synchronous standby.

        Raises AssertionError after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            while True:
                row = conn.execute("SELECT state, sync_state FROM pg_stat_replication WHERE application_name = %s",
                                   (STANDBY_NAME,)).fetchone()
                if row == ("streaming", "sync"):
                    return
                assert time.monotonic() < deadline, f"the standby is not a synchronous standby: {row}"
                time.sleep(0.1)


@contextlib.contextmanager
def replicated_pair(var: Path):
    """Yield a running Pair made in ``var`` (a checkout's ``.var/``, whose parent exists), its
    standby synchronous; stop and delete both clusters however the block ends."""
    with _pair(var) as pair:
        with psycopg.connect(pair.primary.url(), autocommit=True) as conn:
            # Set after cloning: pg_basebackup copies postgresql.auto.conf, and a promoted standby
            # that still named a synchronous standby would make every commit wait for one.
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '\"{STANDBY_NAME}\"'")
            conn.execute("ALTER SYSTEM SET synchronous_commit = on")
            conn.execute("SELECT pg_reload_conf()")
        pair.wait_until_synchronous()
        yield pair


@contextlib.contextmanager
def asynchronous_pair(var: Path):
    """Yield a running Pair made in ``var`` whose standby is an asynchronous read replica:
    commits never wait for it, so it may lag. Stopped and deleted however the block ends."""
    with _pair(var) as pair:
        pair.wait_until_replayed()
        yield pair


@contextlib.contextmanager
def _pair(var: Path):
    pair = Pair(localpg.Cluster(var / "primary"), localpg.Cluster(var / "standby"))
    try:
        pair.primary.start()
        _clone(pair.primary, pair.standby)
        pair.standby.start()
        yield pair
    finally:
        localpg.clean(var)


def _wait_for(condition, message: str, timeout: float = 15) -> None:
    """Poll ``condition`` every 50 ms; AssertionError with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def _clone(primary: localpg.Cluster, standby: localpg.Cluster) -> None:
    """Lay out ``standby`` as localpg does and fill it with ``pg_basebackup -R`` from ``primary``:
    it then starts as a hot standby streaming from the primary through its own slot."""
    home = localpg._prepare_home(standby.base, localpg._owner())
    password = primary.password_file.read_text().strip()
    localpg._write_private(home / "superuser-password", password)
    standby.port_file.write_text(str(localpg.free_port()))
    source = (f"host=127.0.0.1 port={primary.port} user=postgres password={password} "
              f"application_name={STANDBY_NAME}")
    localpg._run_server_command([str(localpg.ensure_installed() / "pg_basebackup"), "-d", source,
                                 "-D", str(home / "data"), "-R", "-X", "stream", "-c", "fast",
                                 "-C", "-S", STANDBY_NAME])


def _pg_ctl(cluster: localpg.Cluster, *args: str) -> None:
    localpg._run_server_command([str(localpg.bindir() / "pg_ctl"), "-D", str(cluster.data.resolve()), *args])
