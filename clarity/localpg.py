"""A local PostgreSQL for development, tests and benchmarks; never used in production.

PostgreSQL refuses to run as root, so when we are root its binaries run as the unprivileged
system user ``clarity-pg`` (created on first use), and a new cluster lives in a directory that
user owns under ``/var/lib/clarity``, linked from ``.var/`` (see ``Cluster``). The server
binaries are installed with apt-get when missing. ``make run`` itself is clarity.devserver.

    python -m clarity.localpg ensure   # install the server binaries if missing
    python -m clarity.localpg stop     # stop the make run cluster
    python -m clarity.localpg clean    # make clean: stop make run's nginx, stop and delete every local cluster

``make clean`` runs this file as a script with the system Python (``python3 -P
clarity/localpg.py clean``), since .venv may be gone and importing the package needs Flask: so
only the standard library at module level.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / ".var"
PG_USER = "clarity-pg"
STATE_ROOT = Path("/var/lib/clarity")
APP_ROLE = "clarity_web"
# make run's nginx (clarity.localnginx): its directory beside the clusters, and its pid file.
FRONT = "nginx"
FRONT_PID = "nginx.pid"
REDIS = "redis"  # make run's redis-server, in .var/redis


def bindir() -> Path | None:
    """The newest PostgreSQL server bin directory on this machine, or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def ensure_installed() -> Path:
    """Return the server bin directory, installing Debian's postgresql package if needed."""
    found = bindir()
    if found:
        return found
    apt_install("postgresql")
    return bindir() or sys.exit("apt-get installed postgresql but no initdb was found")


def apt_install(package: str) -> None:
    """Install a Debian package (as root; otherwise exit asking for it) without starting the
    package's own service, which would take its standard port: a policy-rc.d refuses it during
    the install, unless the machine has one already."""
    if os.geteuid() != 0:
        sys.exit(f"{package} is missing: install the '{package}' package.")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
        if subprocess.run(install, env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
            subprocess.run(install, check=True, env=env)
    finally:
        if ours:
            policy.unlink()


def _owner() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when we are root (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True)
        return pwd.getpwnam(PG_USER)


def _as_owner(argv: list[str]) -> list[str]:
    owner = _owner()
    if owner is None:
        return argv
    # setpriv execs in place (no extra process), so signals reach the server directly.
    return ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--clear-groups", "--", *argv]


def dies_with_parent(argv: list[str]) -> list[str]:
    """``argv`` set to receive SIGTERM when the process that started it dies, however it dies.

    setpriv sets the parent-death signal and execs in place. Changing user clears that signal,
    so as root wrap the result in ``_as_owner``, not the other way round.
    """
    return ["setpriv", "--pdeathsig", "TERM", "--", *argv]


def stop_pid_file(pid_file: Path, command: bytes, timeout: float = 10) -> None:
    """Stop the process ``pid_file`` names, if it runs and its command line contains ``command``
    (so a reused pid is left alone): SIGTERM, then SIGKILL after ``timeout`` seconds. The file
    is removed either way."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return

    def running() -> bool:
        try:
            return command in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    if running():
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running() and time.monotonic() < deadline:
            time.sleep(0.1)
        if running():
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def _run_server_command(argv: list[str], check: bool = True) -> int:
    """Run a server binary as the server user with output discarded; return its exit status.

    Raises CalledProcessError when ``check`` and it fails. It starts in ``/``: the server user
    may be unable to enter our working directory, and PostgreSQL's binaries complain when they
    cannot change back to it.
    """
    return subprocess.run(_as_owner(argv), cwd="/", check=check, stdout=subprocess.DEVNULL,
                          stderr=None if check else subprocess.DEVNULL).returncode


def server_wrappers(directory: Path) -> tuple[str, str]:
    """Paths of initdb and postgres commands that drop root first (for testing.postgresql).

    The initdb wrapper hands the data directory's parent to the unprivileged user, since
    testing.postgresql creates it as the calling user. Both start in ``/`` for the reason
    ``_run_server_command`` gives.
    """
    bins = ensure_installed()
    owner = _owner()
    if owner is None:
        return str(bins / "initdb"), str(bins / "postgres")
    directory.mkdir(parents=True, exist_ok=True)
    drop = " ".join(_as_owner([]))
    scripts = {
        "initdb": f'#!/bin/sh\nfor a in "$@"; do prev=$cur; cur=$a; '
                  f'[ "$prev" = "-D" ] && chown -R {owner.pw_uid}:{owner.pw_gid} "$(dirname "$a")"; done\n'
                  f'cd / && exec {drop} {bins}/initdb "$@"\n',
        "postgres": f'#!/bin/sh\ncd / && exec {drop} {bins}/postgres "$@"\n',
    }
    for name, text in scripts.items():
        path = directory / name
        path.write_text(text)
        path.chmod(0o755)
    return str(directory / "initdb"), str(directory / "postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _make_dir(path: Path, mode: int, owner: pwd.struct_passwd | None = None) -> Path:
    """Create ``path`` if missing and give it ``mode`` (and ``owner``); return it."""
    path.mkdir(mode=mode, exist_ok=True)
    path.chmod(mode)
    if owner:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with open(fd, "w") as file:
        file.write(text)


def state_dir(var: Path) -> Path:
    """The directory under STATE_ROOT for the clusters of the checkout that holds ``var`` (.var/).

    Named for the checkout, with a hash of its absolute path so two checkouts of the same name
    never share a cluster; the name is reduced to characters that are safe in a server option
    and kept short, so the socket path stays under the kernel's 107 bytes.
    """
    checkout = var.resolve().parent
    digest = hashlib.sha256(str(checkout).encode()).hexdigest()[:12]
    label = re.sub(r"[^A-Za-z0-9._-]", "_", checkout.name)[:40] or "clarity"
    return STATE_ROOT / f"{label}-{digest}"


def _prepare_home(base: Path, owner: pwd.struct_passwd | None) -> Path:
    """Make ``base`` ready for a new cluster (or make run's nginx); return the real directory
    behind it (mode 700).

    Without ``owner`` (we are not root) that is ``base`` itself. As root it belongs to ``owner``
    and lives in ``state_dir``, ``base`` being a link to it: the server user must reach it, and
    cannot enter a checkout whose parents only root may enter (/root, a private mktemp -d).
    """
    base.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if owner is None:
        return _make_dir(base, 0o700)
    ours = state_dir(base.parent)
    if base.is_symlink():
        home = base.resolve()
    else:
        if base.is_dir():
            # No cluster yet (we are creating one): only what an earlier failed start left.
            shutil.rmtree(base)
        home = ours / base.name
        base.symlink_to(home, target_is_directory=True)
    if home.parent == ours:
        # Others may pass through to their own clusters' directories, but not list them.
        _make_dir(STATE_ROOT, 0o711)
        _make_dir(home.parent, 0o700, owner)
    return _make_dir(home, 0o700, owner)


class Cluster:
    """A persistent local cluster at ``base`` (data, socket dir, log, superuser password).

    ``base`` is normally ``<checkout>/.var/<name>``. Created as root, it is a link to a
    directory the server user owns under STATE_ROOT (see ``_prepare_home``); the attributes
    below are paths through ``base``, and the server is always given the resolved ones.
    """

    def __init__(self, base: Path):
        self.base = base
        self.data = base / "data"
        self.port_file = base / "port"
        self.password_file = base / "superuser-password"

    @property
    def port(self) -> int:
        return int(self.port_file.read_text())

    def url(self, user="postgres", password=None, database="postgres") -> str:
        password = password if password is not None else self.password_file.read_text().strip()
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Create the cluster if needed and start it (waits until it accepts connections).

        Raises CalledProcessError when initdb or pg_ctl fails (its output is on stderr).
        """
        bins = ensure_installed()
        if not (self.data / "PG_VERSION").exists():
            self._create(bins)
        if self._running():
            return
        home = self.base.resolve()
        _run_server_command([str(bins / "pg_ctl"), "-D", str(home / "data"), "-l", str(home / "server.log"),
                             "-o", f"-p {self.port} -h 127.0.0.1 -k {home}", "-w", "start"])

    def _create(self, bins: Path) -> None:
        """Lay out ``base`` (see ``_prepare_home``), pick a port and a superuser password, initdb."""
        owner = _owner()
        home = _prepare_home(self.base, owner)
        password_file = home / "superuser-password"
        _write_private(password_file, secrets.token_urlsafe(24))
        if owner:
            # initdb reads it as the server user.
            os.chown(password_file, owner.pw_uid, owner.pw_gid)
        self.port_file.write_text(str(free_port()))
        _run_server_command([str(bins / "initdb"), "-D", str(home / "data"), "-U", "postgres",
                             "--auth=scram-sha-256", f"--pwfile={password_file}",
                             "-E", "UTF8", "--locale=C.UTF-8"])

    def stop(self) -> None:
        """Stop the server if it runs (fast shutdown: open sessions are ended).

        Raises CalledProcessError when pg_ctl cannot stop it.
        """
        if self._running():
            _run_server_command([str(bindir() / "pg_ctl"), "-D", str(self.data.resolve()), "-m", "fast", "-w", "stop"])

    def destroy(self) -> None:
        """Stop the server and delete the cluster: its directory and the link to it.

        A link's target is deleted only inside STATE_ROOT, where we put it; one made by hand
        to elsewhere loses just the link.
        """
        self.stop()
        linked = self.base.is_symlink()
        home = self.base.resolve()
        if linked:
            self.base.unlink()
        if not linked or home.is_relative_to(STATE_ROOT.resolve()):
            shutil.rmtree(home, ignore_errors=True)
        if home.parent.parent == STATE_ROOT.resolve():
            with contextlib.suppress(OSError):  # it still holds another cluster of the checkout
                home.parent.rmdir()

    def _running(self) -> bool:
        # No server binaries or no data directory: nothing of ours can be running.
        bins = bindir()
        if bins is None or not self.data.is_dir():
            return False
        return _run_server_command([str(bins / "pg_ctl"), "-D", str(self.data.resolve()), "status"], check=False) == 0


def clean(var: Path = VAR) -> None:
    """``make clean``: stop make run's nginx and redis-server, stop and delete every local cluster of the checkout
    holding ``var``.

    That is each cluster in ``var`` (the make run cluster, the benchmarks') and, as root, any
    left in the checkout's ``state_dir`` after ``var`` was deleted by hand. ``var`` itself is
    left for the caller to remove.
    """
    # A make run killed outright may have left its nginx running (its directory goes below);
    # its redis-server (rate-limit counters, nothing on disk) runs until now.
    for front in (var / FRONT, state_dir(var) / FRONT):
        stop_pid_file(front / FRONT_PID, b"nginx")
    stop_pid_file(var / REDIS / "redis.pid", b"redis-server")
    bases = [p for p in var.iterdir() if p.is_symlink() or (p / "data").is_dir()] if var.is_dir() else []
    for base in bases:
        Cluster(base).destroy()
    left = state_dir(var)
    if os.geteuid() == 0 and left.is_dir():
        for home in list(left.iterdir()):
            Cluster(home).destroy()


def provision(cluster: Cluster, database: str, app_password: str) -> dict:
    """Create the database, apply migrations as the owner, and a login role for the app.

    Returns the environment the app needs (DATABASE_URL as the least-privileged role).
    """
    from psycopg import sql

    from clarity import queries, schema

    provisioning = queries.load().provision

    with schema.owner_connection(cluster.url()) as conn:
        if not provisioning.get_database_exists.value(conn, {"name": database}):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    owner_url = cluster.url(database=database)
    schema.apply_migrations(owner_url)
    with schema.owner_connection(owner_url) as conn:
        exists = provisioning.get_role_exists.value(conn, {"name": APP_ROLE})
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(APP_ROLE), sql.Literal(app_password)))
        conn.execute(sql.SQL("GRANT clarity_app TO {}").format(sql.Identifier(APP_ROLE)))
    return {
        "DATABASE_URL": cluster.url(APP_ROLE, app_password, database),
        "CLARITY_MIGRATION_DATABASE_URL": owner_url,
    }


def stop_child(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM ``process`` (a child) unless it has exited, and wait; SIGKILL after ``timeout`` s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "ensure":
        print(ensure_installed())
    elif command == "stop":
        Cluster(VAR / "pg").stop()
    elif command == "clean":
        clean()
    else:
        sys.exit(__doc__)
