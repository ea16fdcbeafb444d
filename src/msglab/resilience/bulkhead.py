"""A bulkhead: at most ``limit`` calls at once to one dependency; a caller that cannot get a
slot within ``wait_s`` is refused with ``OverCapacity`` (an HTTP service answers 503), so a
slow dependency ties up ``limit`` workers, not all of them. Thread-safe."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from msglab.errors import MsglabError

T = TypeVar("T")


class OverCapacity(MsglabError):
    """Refused: every slot was busy for ``wait_s`` (answer 503 Service Unavailable)."""

    http_status = 503


class Bulkhead:
    def __init__(self, limit: int, wait_s: float = 0.0) -> None:
        if limit < 1 or wait_s < 0:
            raise ValueError("limit must be at least 1 and wait_s not negative")
        self.limit = limit
        self._wait_s = wait_s
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.in_use = 0
        self.peak = 0  # the most calls that were inside at once
        self.refused = 0

    def call(self, fn: Callable[[], T]) -> T:
        if self._wait_s:
            acquired = self._slots.acquire(timeout=self._wait_s)
        else:
            acquired = self._slots.acquire(blocking=False)
        if not acquired:
            with self._lock:
                self.refused += 1
            raise OverCapacity(f"over capacity: {self.limit} calls under way")
        with self._lock:
            self.in_use += 1
            self.peak = max(self.peak, self.in_use)
        try:
            return fn()
        finally:
            with self._lock:
                self.in_use -= 1
            self._slots.release()
