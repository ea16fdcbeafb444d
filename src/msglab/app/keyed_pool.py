"""Runs one consumer's handler on several threads while each key keeps its order.

    pool = KeyedPool(4, run)          # run(delivery) -> whether the chain settled it
    pool.submit(delivery)             # from the flow's thread; waits while the window is full
    pool.settle_done()                # the flow's thread: ack / nack what is done, in order
    pool.finish()                     # wait for every handler, settle, stop the threads

A delivery goes to the thread of its key's share (``crc32(key) % n``; a message without a
key to the next thread in turn), so two messages of one key never run at once nor out of
order; messages of different keys do.

Settling stays with the flow's thread and follows the delivery order: a delivery is acked (or
nacked) only once it and every delivery handed in before it are done. That is what every
transport needs: Kafka's acks are offsets, cumulative per partition (acking a later message
first would commit past an earlier one still running), and pika's channel belongs to the thread
that consumes. A slow message delays the acks of those behind it, never their handlers. At
most ``window`` deliveries are in the pool; ``submit`` settles and waits while it is full.
"""

from __future__ import annotations

import itertools
import queue
import threading
import zlib
from collections import deque
from collections.abc import Callable

from msglab.message import Delivery

_STOP = None


class _Slot:
    __slots__ = ("delivery", "ok")

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.ok: bool | None = None  # None while its handler runs or waits


class KeyedPool:
    def __init__(
        self, threads: int, run: Callable[[Delivery], bool], window: int | None = None
    ) -> None:
        if threads < 2:
            raise ValueError("a KeyedPool runs 2 threads or more")
        self._run = run
        self._window = window or 8 * threads
        self._slots: deque[_Slot] = deque()
        self._done = threading.Condition()
        self._queues: list[queue.SimpleQueue[_Slot | None]] = [
            queue.SimpleQueue() for _ in range(threads)
        ]
        self._next = itertools.cycle(range(threads))
        self._threads = [
            threading.Thread(target=self._work, args=(q,), name=f"handler-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        for t in self._threads:
            t.start()

    def _work(self, inbox: queue.SimpleQueue[_Slot | None]) -> None:
        while (slot := inbox.get()) is not _STOP:
            try:
                ok = self._run(slot.delivery)
            except BaseException:  # run reports its own failures; never leave a slot open
                ok = False
            with self._done:
                slot.ok = ok
                self._done.notify_all()

    def _share(self, delivery: Delivery) -> int:
        key = delivery.message.key
        if key is None:
            return next(self._next)
        return zlib.crc32(key.encode()) % len(self._queues)

    def submit(self, delivery: Delivery) -> None:
        """Hand ``delivery`` to its key's thread, first settling what is done and, while
        ``window`` deliveries are in the pool, waiting for the oldest."""
        self.settle_done()
        while len(self._slots) >= self._window:
            with self._done:
                self._done.wait_for(lambda: self._slots[0].ok is not None, 0.2)
            self.settle_done()
        slot = _Slot(delivery)
        self._slots.append(slot)
        self._queues[self._share(delivery)].put(slot)

    def settle_done(self) -> int:
        """Ack (or nack for redelivery) the done deliveries that no running one precedes;
        how many. Only from the thread that submits."""
        settled = 0
        slots = self._slots
        while slots and slots[0].ok is not None:
            slot = slots.popleft()
            if slot.ok:
                slot.delivery.ack()
            else:
                slot.delivery.nack(requeue=True)
            settled += 1
        return settled

    @property
    def in_flight(self) -> int:
        return len(self._slots)

    def finish(self, settle: bool = True) -> None:
        """Wait until every handed-in delivery's handler ended, settle them in order (unless
        ``settle`` is False: the subscriber is gone and they come again), stop the threads.
        Once: a second call does nothing."""
        if not any(t.is_alive() for t in self._threads):
            return
        for q in self._queues:
            q.put(_STOP)
        for t in self._threads:
            t.join()
        if settle:
            self.settle_done()
        self._slots.clear()
