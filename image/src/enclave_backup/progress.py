"""Progress lines at a steady interval while bytes flow."""

from __future__ import annotations

import time
from typing import Callable


class Progress:
    def __init__(self, interval: float, emit: Callable[[dict], None], clock=time.monotonic):
        self.interval = interval
        self.emit = emit
        self.clock = clock
        self.started = clock()
        self._next = self.started + interval
        self.sql_bytes = 0

    def add(self, n: int, snapshot: Callable[[], dict]) -> None:
        self.sql_bytes += n
        now = self.clock()
        if now >= self._next:
            self._next = now + self.interval
            elapsed = now - self.started
            self.emit({"sql_bytes": self.sql_bytes, "elapsed_s": round(elapsed, 1),
                       "sql_mb_per_s": round(self.sql_bytes / elapsed / 1e6, 1) if elapsed else 0.0,
                       **snapshot()})

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started
