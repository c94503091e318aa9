"""CPU seconds (user + system) spent by a process tree, read from /proc (Linux only)."""
from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may contain spaces; fields follow the last ')'.
    return text.rpartition(")")[2].split()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def tree_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live children, plus those of its reaped children.

    The sum only grows: a child's time moves into the parent's cutime/cstime when it is
    reaped. Returns 0.0 when ``pid`` is gone.
    """
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # After the name: state ppid ... utime(11) stime(12) cutime(13) cstime(14).
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    for child in _children(pid):
        child_fields = _stat(child)
        if child_fields:
            ticks += int(child_fields[11]) + int(child_fields[12])
    return ticks / TICKS


def postmaster_pid(data_dir: Path) -> int:
    """The running postmaster's pid, from ``postmaster.pid`` in the data directory."""
    return int((data_dir / "postmaster.pid").read_text().split()[0])
