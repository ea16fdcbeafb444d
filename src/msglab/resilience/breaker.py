"""A circuit breaker: closed -> open after consecutive failures -> half-open after a pause ->
closed again after a successful trial call (or open again after a failed one).

While open, calls fail at once with ``BreakerOpen`` instead of each waiting out a timeout
against a dependency that is down: the caller gets its answer (an error) in microseconds and
the dependency is not hammered. In half-open one trial call at a time goes through. Which
exceptions count as failures is the caller's choice (``failures``): a timeout or a lost
connection, not a validation error. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal, TypeVar

from msglab.errors import MsglabError

T = TypeVar("T")
State = Literal["closed", "open", "half-open"]


class BreakerOpen(MsglabError):
    """The call was refused without being tried: the breaker is open (or a trial is running)."""


class CircuitBreaker:
    """threshold: consecutive failures that open the breaker. reset_s: how long it stays open
    before a trial. failures: the exception types that count (others pass through uncounted).
    ``transitions`` records (monotonic time, new state) for observation."""

    def __init__(
        self,
        threshold: int = 5,
        reset_s: float = 10.0,
        failures: tuple[type[BaseException], ...] = (Exception,),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or reset_s <= 0:
            raise ValueError("threshold must be at least 1 and reset_s positive")
        self.threshold = threshold
        self.reset_s = reset_s
        self._failures_types = failures
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trial = False
        self.transitions: list[tuple[float, State]] = []

    @property
    def state(self) -> State:
        with self._lock:
            if self._state == "open" and self._clock() - self._opened_at >= self.reset_s:
                self._set("half-open")
            return self._state

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` if the breaker lets it through; BreakerOpen if not."""
        self._admit()
        try:
            result = fn()
        except self._failures_types:
            self._failed()
            raise
        except BaseException:
            self._release_trial()
            raise
        self._succeeded()
        return result

    def _admit(self) -> None:
        state = self.state
        with self._lock:
            if state == "open":
                raise BreakerOpen(f"circuit open: {self._failures} consecutive failures")
            if state == "half-open":
                if self._trial:
                    raise BreakerOpen("circuit half-open: a trial call is under way")
                self._trial = True

    def _failed(self) -> None:
        with self._lock:
            self._trial = False
            self._failures += 1
            if self._state == "half-open" or self._failures >= self.threshold:
                self._opened_at = self._clock()
                self._set("open")

    def _succeeded(self) -> None:
        with self._lock:
            self._trial = False
            self._failures = 0
            if self._state != "closed":
                self._set("closed")

    def _release_trial(self) -> None:
        with self._lock:
            self._trial = False

    def _set(self, state: State) -> None:
        self._state = state
        self.transitions.append((self._clock(), state))
