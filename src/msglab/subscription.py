"""The lifecycle every transport's subscriber shares, so that each states only its broker part.

``subscribe`` (or ``batches``) opens the subscription eagerly (it exists when it returns),
then hands out a generator. ``close`` works from any thread and releases the connection
exactly once: at once when iteration never started; by closing the generator when called
from the iterating thread (after a ``break``); otherwise the iterating thread sees the flag at
its next poll (each transport polls at least every 0.2 s) and releases on its way out.

A transport's ``_deliveries`` (and ``_batches``) yields ``None`` for a poll that found
nothing: the shared iteration calls the ``on_idle`` hook there (a consumer that settles in
batches settles what it holds when nothing more is coming), and the grouping ``_batches`` ends
its short batch there.
"""

from __future__ import annotations

import contextlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator
from typing import Any, ClassVar

from msglab.config import check_name
from msglab.message import Batch, Delivery

BATCH_WAIT_S = 0.05  # a batch grouped from single deliveries collects for this long at most


class SubscriberBase(ABC):
    """``prefetch``: how many unacknowledged messages the broker pushes at most (0: it does
    not push). A batch is kept to half of it, or it would wait for acks that cannot come.

    ``fetches_batches``: True where a batch is what the client already holds, handed out at once
    (the transport overrides ``_batches`` with the broker's own batch fetch, or ``_more_coming``
    with what its client has buffered); False where ``batches`` groups single deliveries, which
    holds the first of them up to BATCH_WAIT_S."""

    fetches_batches: ClassVar[bool] = False

    def __init__(self, group: str, prefetch: int = 0) -> None:
        self._group = check_name("group", group)
        self._prefetch = prefetch
        self._closed = threading.Event()
        self._generator: Generator[Any, None, None] | None = None
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
    def _deliveries(self, topic: str) -> Iterator[Delivery | None]:
        """Yield deliveries, and None after a poll that found nothing, until ``self._closed``
        is set (poll at least every 0.2 s)."""

    @abstractmethod
    def _release(self) -> None:
        """Close the connection (called once, from the thread that iterated, if any)."""

    def subscribe(self, topic: str) -> Iterator[Delivery]:
        check_name("topic", topic)
        self._open(topic)
        self._generator = self._run(self._deliveries(topic))
        return self._generator

    def batches(self, topic: str, max_messages: int = 100) -> Iterator[Batch]:
        check_name("topic", topic)
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if self._prefetch:
            max_messages = max(1, min(max_messages, self._prefetch // 2))
        self._open(topic)
        self._generator = self._run(self._batches(topic, max_messages))
        return self._generator

    def _batches(self, topic: str, limit: int) -> Iterator[Batch | None]:
        """Deliveries grouped: a batch ends when it is full, when a poll found nothing more, or
        when ``_more_coming`` says so. Transports that fetch in batches override this, yielding
        None for an empty poll as ``_deliveries`` does."""
        held: list[Delivery] = []
        began = 0.0
        for d in self._deliveries(topic):
            if d is not None:
                if not held:
                    began = time.monotonic()
                held.append(d)
                if len(held) < limit and self._more_coming(began):
                    continue
            elif not held:
                yield None
                continue
            messages = [h.message for h in held]
            yield Batch(topic, messages, [h.attempt for h in held], self._settle_group, held)
            held = []

    def _more_coming(self, began: float) -> bool:
        """Whether a batch being grouped (its first delivery came at ``began``) waits for
        another: by default until BATCH_WAIT_S after its first (a slow, steady stream would
        otherwise fill it for seconds). A transport that knows what it already holds says so
        instead."""
        return time.monotonic() - began < BATCH_WAIT_S

    def _settle_group(self, batch: Batch, ok: bool, requeue: bool) -> None:
        """Settle a batch grouped by ``_batches`` (its token: the deliveries), one by one.
        A transport that can settle many deliveries at once overrides this."""
        for d in batch.token:
            if ok:
                d.ack()
            else:
                d.nack(requeue)

    def _run(self, items: Iterator[Any]) -> Generator[Any, None, None]:
        """Hand out ``items`` (deliveries or batches), calling ``on_idle`` for each None (an
        empty poll), and release the connection when the iteration ends."""
        self._iterating_thread = threading.get_ident()
        try:
            for item in items:
                if item is None:
                    self._idle()
                else:
                    yield item
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
