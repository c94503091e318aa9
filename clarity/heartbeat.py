"""Tell gunicorn's arbiter that a worker busy with one long answer is alive.

A sync worker reports in only between requests; an answer streamed for longer than
CLARITY_WORKER_TIMEOUT (a FHIR export of years of readings) would get the worker killed
mid-stream. gunicorn.conf.py installs the worker's ``notify`` at start; a long stream calls
``beat()`` as it goes. Outside gunicorn (the tests, the CLI) there is nothing to tell.
"""
from __future__ import annotations

import time

_notify = None
_last = 0.0
INTERVAL_SECONDS = 1.0


def install(notify) -> None:
    global _notify
    _notify = notify


def beat() -> None:
    """Report in, at most once a second (a report touches a file)."""
    global _last
    if _notify is None:
        return
    now = time.monotonic()
    if now - _last >= INTERVAL_SECONDS:
        _last = now
        _notify()
