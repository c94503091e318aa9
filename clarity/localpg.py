"""A local PostgreSQL for development, tests and benchmarks; never used in production.

PostgreSQL refuses to run as root, so when we are root its binaries run as the unprivileged
system user ``clarity-pg`` (created on first use). The server binaries are installed with
apt-get when missing.

    python -m clarity.localpg ensure   # install the server binaries if missing
    python -m clarity.localpg serve    # make run: local cluster, keys, migrations, demo users, gunicorn
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / ".var"
PG_USER = "clarity-pg"
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


def server_wrappers(directory: Path) -> tuple[str, str]:
    """Paths of initdb and postgres commands that drop root first (for testing.postgresql).

    The initdb wrapper hands the data directory's parent to the unprivileged user, since
    testing.postgresql creates it as the calling user.
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
                  f'exec {drop} {bins}/initdb "$@"\n',
        "postgres": f'#!/bin/sh\nexec {drop} {bins}/postgres "$@"\n',
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


class Cluster:
    """A persistent local cluster under ``base`` (data, socket dir, log, superuser password)."""

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
        """Create the cluster if needed and start it (waits until it accepts connections)."""
        bins = ensure_installed()
        owner = _owner()
        self.base.mkdir(parents=True, exist_ok=True)
        if not (self.data / "PG_VERSION").exists():
            self.password_file.write_text(secrets.token_urlsafe(24))
            self.port_file.write_text(str(free_port()))
            self.base.chmod(0o700)
            if owner:
                os.chown(self.base, owner.pw_uid, owner.pw_gid)
                os.chown(self.password_file, owner.pw_uid, owner.pw_gid)
            subprocess.run(_as_owner([str(bins / "initdb"), "-D", str(self.data), "-U", "postgres",
                                      "--auth=scram-sha-256", f"--pwfile={self.password_file}",
                                      "-E", "UTF8", "--locale=C.UTF-8"]),
                           check=True, stdout=subprocess.DEVNULL)
        if self._running():
            return
        subprocess.run(_as_owner([str(bins / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"),
                                  "-o", f"-p {self.port} -h 127.0.0.1 -k {self.base}", "-w", "start"]),
                       check=True, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        bins = ensure_installed()
        if self._running():
            subprocess.run(_as_owner([str(bins / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
                           check=True, stdout=subprocess.DEVNULL)

    def _running(self) -> bool:
        bins = ensure_installed()
        return subprocess.run(_as_owner([str(bins / "pg_ctl"), "-D", str(self.data), "status"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


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
    env_file.write_text("".join(f"{k}={v}\n" for k, v in saved.items()))
    env_file.chmod(0o600)
    return {k: v for k, v in saved.items() if k != "APP_PASSWORD"}


def serve() -> None:
    """``make run``: without DATABASE_URL, a local cluster with keys, migrations and demo users."""
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        if env.get("CLARITY_ENV") == "production":
            sys.exit("CLARITY_ENV=production needs DATABASE_URL and keys; it never uses a local cluster or generated keys.")
        env.update(dev_environment())
        env.setdefault("CLARITY_DEMO_PASSWORD", "clarity-demo-password")
        print("Local PostgreSQL under .var/pg; development keys in .var/dev.env", flush=True)
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
    else:
        sys.exit(__doc__)
