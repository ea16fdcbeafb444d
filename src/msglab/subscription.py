"""The lifecycle every transport's subscriber shares, so that each states only its broker part.

``subscribe`` opens the subscription eagerly (it exists when ``subscribe`` returns), then hands
out a generator of deliveries. ``close`` works from any thread and releases the connection
exactly once: at once when iteration never started; by closing the generator when called
from the iterating thread (after a ``break``); otherwise the iterating thread sees the flag at
its next poll (each transport polls at least every 0.2 s) and releases on its way out.

``on_idle`` lets a batch consumer settle what it holds when nothing more is coming: each
transport calls the hook from the iterating thread whenever a poll came back empty.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator

from msglab.config import check_name
from msglab.message import Delivery


class SubscriberBase(ABC):
    def __init__(self, group: str) -> None:
        self._group = check_name("group", group)
        self._closed = threading.Event()
        self._generator: Generator[Delivery, None, None] | None = None
        self._iterating_thread: int | None = None
        self._released = threading.Lock()
        self._idle: Callable[[], None] = _nothing

    def on_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` in the iterating thread after each poll that found nothing."""
        self._idle = callback

    @abstractmethod
    def _open(self, topic: str) -> None:
        """Create the subscription (queue, group, channel); raise ConnectError if unreachable."""

    @abstractmethod
    def _deliveries(self, topic: str) -> Iterator[Delivery]:
        """Yield deliveries until ``self._closed`` is set (poll at least every 0.2 s)."""

    @abstractmethod
    def _release(self) -> None:
        """Close the connection (called once, from the thread that iterated, if any)."""

    def subscribe(self, topic: str) -> Iterator[Delivery]:
        check_name("topic", topic)
        self._open(topic)
        self._generator = self._run(topic)
        return self._generator

    def _run(self, topic: str) -> Generator[Delivery, None, None]:
        self._iterating_thread = threading.get_ident()
        try:
            yield from self._deliveries(topic)
        finally:
            self._release_once()

    def _release_once(self) -> None:
        if self._released.acquire(blocking=False):
            self._release()

    def close(self) -> None:
        self._closed.set()
        if self._iterating_thread is None:
            if self._generator is not None:
                with contextlib.suppress(ValueError):  # another thread is just starting it
                    self._generator.close()
            self._release_once()
        elif self._iterating_thread == threading.get_ident() and self._generator is not None:
            # suspended here after a break: closing it runs the release. From a signal handler
            # the generator is running below us (ValueError): it stops at its next poll.
            with contextlib.suppress(ValueError):
                self._generator.close()


def _nothing() -> None:
    pass
