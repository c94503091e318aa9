"""A local PostgreSQL for development, tests and benchmarks; never used in production.

PostgreSQL refuses to run as root, so when we are root its binaries run as the unprivileged
system user ``clarity-pg`` (created on first use), and a new cluster lives in a directory that
user owns under ``/var/lib/clarity``, linked from ``.var/`` (see ``Cluster``). The server
binaries are installed with apt-get when missing.

    python -m clarity.localpg ensure   # install the server binaries if missing
    python -m clarity.localpg serve    # make run: local cluster, keys, migrations, demo users, gunicorn
    python -m clarity.localpg stop     # stop the make run cluster
    python -m clarity.localpg clean    # make clean: stop and delete every local cluster of this checkout

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
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / ".var"
PG_USER = "clarity-pg"
STATE_ROOT = Path("/var/lib/clarity")
APP_ROLE = "clarity_web"


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
    if os.geteuid() != 0:
        sys.exit("PostgreSQL server binaries are missing: install the 'postgresql' package.")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"], check=True, env=env)
    found = bindir()
    if not found:
        sys.exit("apt-get installed postgresql but no initdb was found")
    return found


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
    """Make ``base`` ready for a new cluster; return the real directory behind it (mode 700).

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
    """``make clean``: stop and delete every local cluster of the checkout holding ``var``.

    That is each cluster in ``var`` (the make run cluster, the benchmarks') and, as root, any
    left in the checkout's ``state_dir`` after ``var`` was deleted by hand. ``var`` itself is
    left for the caller to remove.
    """
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
    import psycopg
    from psycopg import sql
    from yoyo import get_backend, read_migrations

    from clarity import queries
    from clarity.cli import yoyo_url
    from clarity.db import MIGRATIONS_DIR

    provisioning = queries.load().provision

    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        if not provisioning.get_database_exists.value(conn, {"name": database}):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    owner_url = cluster.url(database=database)
    backend = get_backend(yoyo_url(owner_url))
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with backend.lock():
        backend.apply_migrations(backend.to_apply(migrations))
    with psycopg.connect(owner_url, autocommit=True) as conn:
        exists = provisioning.get_role_exists.value(conn, {"name": APP_ROLE})
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(APP_ROLE), sql.Literal(app_password)))
        conn.execute(sql.SQL("GRANT clarity_app TO {}").format(sql.Identifier(APP_ROLE)))
    return {
        "DATABASE_URL": cluster.url(APP_ROLE, app_password, database),
        "CLARITY_MIGRATION_DATABASE_URL": owner_url,
    }


def dev_environment() -> dict:
    """Start the development cluster under .var/ and return the env (URLs and keys) to run with.

    Keys are generated once and kept in .var/dev.env, so data survives restarts.
    """
    from clarity.security.crypto import generate_key

    cluster = Cluster(VAR / "pg")
    cluster.start()
    env_file = VAR / "dev.env"
    saved = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line) \
        if env_file.exists() else {}
    if not saved:
        saved = {"CLARITY_DATA_KEYS": f"dev1:{generate_key()}", "CLARITY_ACTIVE_DATA_KEY": "dev1",
                 "CLARITY_BLIND_INDEX_KEY": generate_key(), "APP_PASSWORD": secrets.token_urlsafe(18)}
    saved.update(provision(cluster, "clarity", saved["APP_PASSWORD"]))
    _write_private(env_file, "".join(f"{k}={v}\n" for k, v in saved.items()))
    return {k: v for k, v in saved.items() if k != "APP_PASSWORD"}


def serve() -> None:
    """``make run``: without DATABASE_URL, a local cluster with keys, migrations and demo users."""
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        if env.get("CLARITY_ENV") == "production":
            sys.exit("CLARITY_ENV=production needs DATABASE_URL and keys; it never uses a local cluster or generated keys.")
        env.update(dev_environment())
        env.setdefault("CLARITY_DEMO_PASSWORD", "clarity-demo-password")
        print(f"Local PostgreSQL in {(VAR / 'pg').resolve()}; development keys in {VAR / 'dev.env'}", flush=True)
        subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "seed", "demo"], check=True, env=env, cwd=ROOT)
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    os.chdir(ROOT)
    os.execve(gunicorn, [gunicorn, "-c", "gunicorn.conf.py", "wsgi:app"], env)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "ensure":
        print(ensure_installed())
    elif command == "serve":
        serve()
    elif command == "stop":
        Cluster(VAR / "pg").stop()
    elif command == "clean":
        clean()
    else:
        sys.exit(__doc__)
