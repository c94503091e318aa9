"""The local cluster starts from a checkout whose parent only its owner may enter (issue 7).

As root the server runs as ``clarity-pg``, who cannot enter such a directory (a home of mode 700,
a ``mktemp -d``), so the cluster must live where ``clarity-pg`` can reach it, linked from the
checkout's ``.var/``. Not as root, it stays in ``.var/``. STATE_ROOT is a fresh directory per
test, so nothing is left in /var/lib.
"""
from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from clarity import localpg

pytestmark = pytest.mark.slow
AS_ROOT = os.geteuid() == 0


@pytest.fixture
def state_root(monkeypatch):
    root = Path(tempfile.mkdtemp(prefix="clarity-state-"))
    monkeypatch.setattr(localpg, "STATE_ROOT", root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def private_checkout(parent: Path, owner: str | None) -> Path:
    """``parent/clarity``, ``parent`` being mode 700; both belong to ``owner`` if given."""
    checkout = parent / "clarity"
    checkout.mkdir(parents=True)
    parent.chmod(0o700)
    if owner:
        user = pwd.getpwnam(owner)
        for path in (parent, checkout):
            os.chown(path, user.pw_uid, user.pw_gid)
    return checkout


def server_user_can_enter(path: Path) -> bool:
    drop = localpg._as_owner(["test", "-x", str(path)])
    return subprocess.run(drop, cwd="/").returncode == 0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("checkout_owner", [None, "nobody"], ids=["own-checkout", "ordinary-users-checkout"])
def test_cluster_starts_from_a_checkout_in_a_private_directory_and_clean_removes_it(
        tmp_path, state_root, checkout_owner):
    if checkout_owner and not AS_ROOT:
        pytest.skip("only root runs a cluster from another user's checkout")
    checkout = private_checkout(tmp_path / "home", checkout_owner)
    var = checkout / ".var"
    cluster = localpg.Cluster(var / "pg")
    try:
        cluster.start()
        with psycopg.connect(cluster.url(), connect_timeout=5) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        home = cluster.base.resolve()
        assert mode(home) == 0o700 and mode(cluster.password_file) == 0o600
        if AS_ROOT:
            assert not server_user_can_enter(checkout)
            assert cluster.base.is_symlink() and home.parent == localpg.state_dir(var)
            assert home.owner() == localpg.PG_USER and mode(home.parent) == 0o700
    finally:
        localpg.clean(var)
    assert not os.path.lexists(cluster.base) and list(state_root.iterdir()) == []


@pytest.mark.skipif(not AS_ROOT, reason="only root moves a cluster out of the checkout")
def test_what_a_failed_start_left_in_the_checkout_gives_way_to_a_link(tmp_path, state_root):
    base = private_checkout(tmp_path / "home", None) / ".var" / "pg"
    base.mkdir(parents=True)
    (base / "superuser-password").write_text("from a start that failed")

    home = localpg._prepare_home(base, pwd.getpwnam(localpg.PG_USER))

    assert base.is_symlink() and base.resolve() == home and list(home.iterdir()) == []
    localpg.Cluster(base).destroy()
    assert not os.path.lexists(base) and list(state_root.iterdir()) == []
