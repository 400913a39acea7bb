"""Small threads the node owns (off the executor, so a slow job never blocks a callback)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class LatestWorker:
    """A thread owned by the node that runs the latest submitted job (older ones are skipped).

    Used for vocabulary changes: encoding text takes seconds, and only the last requested
    vocabulary matters."""

    def __init__(self, run: Callable[[Any], None], name: str) -> None:
        self._run = run
        self._cond = threading.Condition()
        self._job: Any = None
        self._pending = False
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Any) -> None:
        with self._cond:
            self._job, self._pending = job, True
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not (self._pending or self._busy), timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                job, self._job, self._pending, self._busy = self._job, None, False, True
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        """Stop taking jobs; True when the thread ended within `timeout` s (a job runs to its end)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()
