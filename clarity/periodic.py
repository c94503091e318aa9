"""A daemon thread that does one thing every few seconds in each gunicorn worker (the audit
sealer, the pool sampler)."""
from __future__ import annotations

import threading


class Periodic:
    """Calls ``tick()`` every ``interval_seconds`` on a daemon thread named ``name``, from
    ``start()`` until ``stop()``. ``tick`` must not raise: the thread lives on, and the next
    tick retries."""

    name = "clarity-periodic"

    def __init__(self, interval_seconds: float):
        self.interval_seconds = interval_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait for it (at most ``timeout`` seconds)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def tick(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_seconds):
            self.tick()
