"""``make run``: the API on 127.0.0.1:8000 through nginx, with, unless the environment names
them, a local PostgreSQL cluster (keys, migrations, demo users) and a redis-server for the rate
limits. Development only: production starts gunicorn itself (README, Operations).

    python -m clarity.devserver
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from clarity import localnginx, localpg, localredis
from clarity.security.crypto import generate_key


def dev_environment() -> dict:
    """Start the development cluster under .var/ and return the env (URLs and keys) to run with.

    Keys are generated once and kept in .var/dev.env, so data survives restarts.
    """
    cluster = localpg.Cluster(localpg.VAR / "pg")
    cluster.start()
    env_file = localpg.VAR / "dev.env"
    saved = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line) \
        if env_file.exists() else {}
    if not saved:
        saved = {"CLARITY_DATA_KEYS": f"dev1:{generate_key()}", "CLARITY_ACTIVE_DATA_KEY": "dev1",
                 "CLARITY_BLIND_INDEX_KEY": generate_key(), "APP_PASSWORD": secrets.token_urlsafe(18)}
    saved.update(localpg.provision(cluster, "clarity", saved["APP_PASSWORD"]))
    localpg._write_private(env_file, "".join(f"{k}={v}\n" for k, v in saved.items()))
    return {k: v for k, v in saved.items() if k != "APP_PASSWORD"}


def local_services(env: dict) -> dict:
    """``env`` completed with what it does not name: without DATABASE_URL a local cluster (keys,
    migrations, demo users), without REDIS_URL a local redis-server. Production names both."""
    production = env.get("CLARITY_ENV") == "production"
    if not env.get("DATABASE_URL"):
        if production:
            sys.exit("CLARITY_ENV=production needs DATABASE_URL and keys; it never uses a local cluster or generated keys.")
        env.update(dev_environment())
        env.setdefault("CLARITY_DEMO_PASSWORD", "clarity-demo-password")
        print(f"Local PostgreSQL in {(localpg.VAR / 'pg').resolve()}; development keys in {localpg.VAR / 'dev.env'}", flush=True)
        subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "seed", "demo"], check=True, env=env, cwd=localpg.ROOT)
    if not env.get("REDIS_URL") and not production:
        env["REDIS_URL"] = localredis.Redis(localpg.VAR / localpg.REDIS).start()
        print(f"Local redis-server (rate limits) at {env['REDIS_URL']}, in {localpg.VAR / localpg.REDIS}", flush=True)
    return env


def serve() -> None:
    """``make run``: nginx on CLARITY_BIND (default 127.0.0.1:8000) in front of gunicorn, which
    listens on a socket in nginx's directory, after the local services the environment does
    not name (local_services).

    gunicorn's sync workers must not face clients directly: one that connects and sends nothing
    holds a worker for its whole timeout (see clarity.localnginx). Runs until either server
    exits or we get SIGINT, SIGTERM or SIGHUP, then stops both; exits with gunicorn's status.
    """
    env = local_services(dict(os.environ))
    listen = env.get("CLARITY_BIND") or "127.0.0.1:8000"
    home = localpg._prepare_home(localpg.VAR / localpg.FRONT, localpg._owner())
    upstream = _private_bind(home / "gunicorn.sock")
    # nginx is one more proxy the app must trust for the client address.
    env.update(CLARITY_BIND=upstream, CLARITY_PROXY_COUNT=str(int(env.get("CLARITY_PROXY_COUNT") or 0) + 1))
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    app = subprocess.Popen(localpg.dies_with_parent([gunicorn, "-c", "gunicorn.conf.py", "wsgi:app"]),
                           cwd=localpg.ROOT, env=env)
    status = 0
    try:
        with localnginx.running(listen, upstream, home) as front:
            print(f"nginx listens on {listen} in front of gunicorn at {upstream}", flush=True)
            while app.poll() is None and front.poll() is None:
                time.sleep(0.5)
            if front.returncode is not None:
                print(f"nginx exited ({front.returncode}); see {home / 'error.log'}", file=sys.stderr)
                status = 1
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:  # nginx did not start (the port is taken, say)
        print(exc, file=sys.stderr)
        status = 1
    finally:
        localpg.stop_child(app, timeout=25)
    sys.exit(status or max(app.returncode, 0))


def _private_bind(socket_path: Path) -> str:
    """gunicorn's bind behind make run's nginx: a unix socket in nginx's private directory,
    which no other local user can reach, or a free port of 127.0.0.1 when that path is too
    long for a socket address."""
    if len(str(socket_path)) < 100:
        return f"unix:{socket_path}"
    return f"127.0.0.1:{localpg.free_port()}"


if __name__ == "__main__":
    serve()
