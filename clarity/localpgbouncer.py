"""A local PgBouncer in transaction-pooling mode in front of a local PostgreSQL, for tests;
production runs its own (README, "Through PgBouncer").

The binary is Debian's ``pgbouncer``, installed with apt-get when missing. PgBouncer refuses to
run as root, so as root it runs as ``clarity-pg``, the unprivileged user of the local clusters
(clarity.localpg), in a private directory that user owns under the system's temporary directory:
reachable however private the checkout is (a home of mode 700), and removed afterwards. Clients
authenticate with SCRAM against an auth file (mode 600) written there from what the caller
passes: a role's SCRAM secret as ``pg_authid`` holds it (``scram_secret``), which PgBouncer also
uses to log in to PostgreSQL on the client's behalf, or a password. Nothing secret is kept
anywhere else. The admin console (``Bouncer.show``) has a user and password of its own, made up
for each start.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from clarity import localpg

ADMIN_USER = "pgbouncer_admin"
_PATH = os.pathsep.join((os.environ.get("PATH", os.defpath), "/usr/sbin"))


def ensure_installed() -> str:
    """The path of the pgbouncer binary, installing Debian's package (not its service, which
    would take port 6432) when it is missing."""
    found = shutil.which("pgbouncer", path=_PATH)
    if found:
        return found
    localpg.apt_install("pgbouncer")
    return shutil.which("pgbouncer", path=_PATH) or sys.exit("apt-get installed pgbouncer but it is not on PATH")


def scram_secret(owner_conn, role: str) -> str:
    """``role``'s SCRAM secret as PostgreSQL stores it, for the auth file; needs a superuser's
    connection. Raises LookupError when the role has no SCRAM password."""
    from clarity import queries

    secret = queries.load().provision.get_role_password.value(owner_conn, {"name": role})
    if not (secret or "").startswith("SCRAM-SHA-256$"):
        raise LookupError(f"role {role!r} has no SCRAM-SHA-256 password")
    return secret


@dataclasses.dataclass(frozen=True)
class Bouncer:
    """A running PgBouncer: its port, directory (config, auth file, log) and admin password."""

    port: int
    home: Path
    admin_password: str

    def url(self, user: str, password: str, database: str) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def show(self, what: str) -> list[dict]:
        """Rows of an admin console ``SHOW`` command (POOLS, SERVERS, CLIENTS, STATS…) as dicts."""
        import psycopg
        from psycopg.rows import dict_row

        if not what.isalpha():
            raise ValueError(f"not a SHOW command: {what!r}")
        # The console speaks only the simple query protocol: no prepares, no transactions.
        with psycopg.connect(self.url(ADMIN_USER, self.admin_password, "pgbouncer"), autocommit=True,
                             prepare_threshold=None, connect_timeout=5) as conn:
            with psycopg.ClientCursor(conn, row_factory=dict_row) as cur:
                cur.execute(f"SHOW {what}")
                return cur.fetchall()


def render(server_port: int, port: int, home: Path, pool_size: int) -> str:
    """pgbouncer.ini for transaction pooling of every database of one server to ``pool_size``
    server connections per database and user."""
    return f"""\
[databases]
* = host=127.0.0.1 port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {home}/userlist.txt
admin_users = {ADMIN_USER}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
max_db_connections = {pool_size}
"""


def _auth_file(users: Mapping[str, str]) -> str:
    """PgBouncer's auth file: ``"user" "secret"`` a line, a ``"`` doubled inside quotes."""
    quote = lambda text: '"' + text.replace('"', '""') + '"'  # noqa: E731
    return "".join(f"{quote(user)} {quote(secret)}\n" for user, secret in users.items())


@contextlib.contextmanager
def running(server_port: int, users: Mapping[str, str], *, pool_size: int = 2,
            timeout: float = 10.0) -> Iterator[Bouncer]:
    """PgBouncer on a free port in front of the PostgreSQL on ``server_port`` while the block
    runs; yields a Bouncer.

    ``users`` maps each role clients may log in as to its SCRAM secret (``scram_secret``) or
    password. The server is reached over TCP at 127.0.0.1. PgBouncer is stopped (SIGTERM: open
    connections are closed) and its directory removed when the block ends, and it also stops if
    this process dies. Raises RuntimeError, with PgBouncer's log, when its console does not
    answer within ``timeout`` seconds.
    """
    owner = localpg._owner()
    home = localpg._make_dir(Path(tempfile.mkdtemp(prefix="clarity-pgbouncer-")), 0o700, owner)
    try:
        admin_password = secrets.token_urlsafe(24)
        bouncer = Bouncer(localpg.free_port(), home, admin_password)
        for name, text in (("userlist.txt", _auth_file({**users, ADMIN_USER: admin_password})),
                           ("pgbouncer.ini", render(server_port, bouncer.port, home, pool_size))):
            localpg._write_private(home / name, text)
            if owner:
                os.chown(home / name, owner.pw_uid, owner.pw_gid)
        process = _start(bouncer, timeout)
        try:
            yield bouncer
        finally:
            localpg.stop_child(process, timeout=10)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _start(bouncer: Bouncer, timeout: float) -> subprocess.Popen:
    import psycopg

    argv = [ensure_installed(), str(bouncer.home / "pgbouncer.ini")]
    log = bouncer.home / "pgbouncer.log"
    # In the foreground PgBouncer logs to stderr. In / for the reason
    # localpg._run_server_command gives.
    with open(log, "wb") as stderr:
        process = subprocess.Popen(localpg._as_owner(localpg.dies_with_parent(argv)), cwd="/",
                                   stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    deadline = time.monotonic() + timeout
    while True:
        try:
            bouncer.show("VERSION")
            return process
        except psycopg.OperationalError:  # not listening yet, or not at all
            if process.poll() is not None or time.monotonic() > deadline:
                localpg.stop_child(process, timeout=10)
                raise RuntimeError(f"pgbouncer did not start on port {bouncer.port}:\n" + log.read_text()) from None
            time.sleep(0.05)
