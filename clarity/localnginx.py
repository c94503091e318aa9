"""nginx in front of gunicorn, from ``deploy/nginx.conf``: for make run, the tests and the benchmarks.

gunicorn's sync workers read each request themselves, one connection at a time, with no limit
on how long a client may take: a client that connects and sends nothing, or declares a body and
trickles it, holds a worker until gunicorn's timeout (30 s), and a few such clients hold them
all. nginx holds idle and slow connections for a few KiB each, bounds how long a header or a
pause in a body may take, and hands gunicorn only whole requests (see README, "In front of
gunicorn").

    python -m clarity.localnginx render LISTEN UPSTREAM HOME   # print deploy/nginx.conf filled in

The binary is Debian's ``nginx``, installed with apt-get when missing. As root, nginx runs as
``clarity-pg``, the unprivileged user of the local PostgreSQL servers (clarity.localpg), in a
directory that user owns: it needs no privileged port, so it never holds root, and its
temporary files are where its workers can reach them.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clarity import localpg

TEMPLATE = localpg.ROOT / "deploy" / "nginx.conf"
_PLACEHOLDER = re.compile(r"\{\{ (\w+) \}\}")


def ensure_installed() -> str:
    """Path of the nginx binary, installing Debian's ``nginx`` package (not its service, which
    would take port 80) if it is missing."""
    found = _which()
    if found:
        return found
    localpg.apt_install("nginx")
    return _which() or sys.exit("apt-get installed nginx but no nginx binary was found")


def _which() -> str | None:
    # An ordinary user's PATH often lacks /usr/sbin, where Debian puts it.
    return shutil.which("nginx", path=os.environ.get("PATH", os.defpath) + os.pathsep + "/usr/sbin")


def render(listen: str, upstream: str, home: Path) -> str:
    """``deploy/nginx.conf`` with its placeholders filled in.

    ``listen`` is the public address as nginx's ``listen`` takes it (``127.0.0.1:8000``,
    ``unix:/path``), ``upstream`` gunicorn's bind (``unix:/path`` or ``host:port``), ``home``
    the directory of the pid file, the error log and the temporary files.
    """
    values = {"listen": listen, "upstream": upstream, "home": str(home)}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], TEMPLATE.read_text())


@contextlib.contextmanager
def running(listen: str, upstream: str, home: Path | None = None):
    """nginx serving ``listen`` in front of ``upstream`` while the block runs; yields its process.

    ``home`` must be a directory the server user may write (``localpg._prepare_home`` makes
    one); without it, a new private directory under the system's temporary directory is used
    and removed afterwards. An nginx that a killed run left in ``home`` is stopped first. nginx
    is stopped when the block ends, and also if this process dies. Raises RuntimeError, with
    nginx's error log, when it is not listening within 10 s.
    """
    temporary = home is None
    if temporary:
        home = localpg._make_dir(Path(tempfile.mkdtemp(prefix="clarity-nginx-")), 0o700, localpg._owner())
    try:
        process = _start(listen, upstream, home)
        try:
            yield process
        finally:
            # SIGTERM: nginx's fast shutdown, which closes open connections.
            localpg.stop_child(process, timeout=10)
    finally:
        if temporary:
            shutil.rmtree(home, ignore_errors=True)


def _start(listen: str, upstream: str, home: Path) -> subprocess.Popen:
    binary = ensure_installed()
    pid_file = home / localpg.FRONT_PID
    localpg.stop_pid_file(pid_file, b"nginx")
    config = home / "nginx.conf"
    config.write_text(render(listen, upstream, home))
    config.chmod(0o644)  # the server user reads it
    # A fresh log, so a failure below shows only this start's messages; nginx creates it as the
    # server user.
    (home / "error.log").unlink(missing_ok=True)
    argv = [binary, "-p", str(home), "-c", str(config), "-e", str(home / "error.log"), "-g", "daemon off;"]
    # In / for the reason localpg._run_server_command gives.
    process = subprocess.Popen(localpg._as_owner(localpg.dies_with_parent(argv)), cwd="/",
                               stdin=subprocess.DEVNULL)
    # nginx writes its pid file once its sockets are bound.
    deadline = time.monotonic() + 10
    while not _names(pid_file, process.pid):
        if process.poll() is not None or time.monotonic() > deadline:
            localpg.stop_child(process, timeout=10)
            log = home / "error.log"
            raise RuntimeError(f"nginx did not start on {listen}:\n" + (log.read_text() if log.exists() else ""))
        time.sleep(0.05)
    return process


def _names(pid_file: Path, pid: int) -> bool:
    try:
        return pid_file.read_text().strip() == str(pid)
    except OSError:
        return False


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "render":
        print(render(sys.argv[2], sys.argv[3], Path(sys.argv[4])), end="")
    else:
        sys.exit(__doc__)
