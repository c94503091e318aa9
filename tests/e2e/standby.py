"""A primary and a streaming standby on local clusters, for failover tests (issue 10).

The standby is a ``pg_basebackup -R`` copy of the primary, with a physical replication slot,
streaming under ``application_name`` STANDBY_NAME; the primary names it in
``synchronous_standby_names``, so a commit returns only once the standby has flushed it. Both
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
    """Yield a running Pair made in ``var`` (a checkout's ``.var/``, whose parent exists);
    stop and delete both clusters however the block ends."""
    pair = Pair(localpg.Cluster(var / "primary"), localpg.Cluster(var / "standby"))
    try:
        pair.primary.start()
        _clone(pair.primary, pair.standby)
        pair.standby.start()
        with psycopg.connect(pair.primary.url(), autocommit=True) as conn:
            # Set after cloning: pg_basebackup copies postgresql.auto.conf, and a promoted standby
            # that still named a synchronous standby would make every commit wait for one.
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '\"{STANDBY_NAME}\"'")
            conn.execute("ALTER SYSTEM SET synchronous_commit = on")
            conn.execute("SELECT pg_reload_conf()")
        pair.wait_until_synchronous()
        yield pair
    finally:
        localpg.clean(var)


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
