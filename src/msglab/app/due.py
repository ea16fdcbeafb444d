"""The retry flow's buffer: entries held until they are due, run in due-time order, settled in
the order they arrived.

Why both orders: a retry entry due in 1 s may arrive behind one due in a minute; running by
due time lets it go first, so a long delay never holds up a short one. But some brokers
settle cumulatively (Kafka commits an offset: acking a later entry acks every earlier one of
its partition), so an entry is acked only once every entry that arrived before it is done.
An entry done but not yet acked when the consumer dies comes again (at-least-once); one not
done is never acked, so a crash loses nothing and its attempt count, kept in its headers,
survives. The buffer holds at most what the broker hands out unacked (the prefetch).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from msglab.message import Delivery


@dataclass
class _Slot:
    delivery: Delivery
    done: bool = False


@dataclass(order=True)
class _Held:
    due: float
    seq: int
    slot: _Slot = field(compare=False)
    entry: Any = field(compare=False)
    key: object = field(compare=False, default=None)


class DueBuffer:
    """Not thread-safe: the retry flow's iterating thread uses it (it settles deliveries)."""

    def __init__(self) -> None:
        self._heap: list[_Held] = []
        self._arrived: deque[_Slot] = deque()
        self._seq = itertools.count()
        self._keys: set[object] = set()

    def __len__(self) -> int:
        return len(self._heap)

    def hold(self, delivery: Delivery, due: float, entry: Any, key: object = None) -> bool:
        """Hold ``delivery`` (carrying ``entry``) until ``due``; False, and the delivery left
        unsettled, when an entry of the same ``key`` is held already (Redis Streams hands an
        entry pending longer than ``claim_idle_s`` out again, even to the consumer holding
        it: settling the original settles both)."""
        if key is not None:
            if key in self._keys:
                return False
            self._keys.add(key)
        slot = _Slot(delivery)
        self._arrived.append(slot)
        heapq.heappush(self._heap, _Held(due, next(self._seq), slot, entry, key))
        return True

    def skip(self, delivery: Delivery) -> None:
        """A delivery that needs no run (another group's entry): done at once."""
        slot = _Slot(delivery, done=True)
        self._arrived.append(slot)
        self._ack_done()

    def next_due(self) -> float | None:
        return self._heap[0].due if self._heap else None

    def pop_due(self, now: float) -> _Held | None:
        """The held entry due earliest, if it is due at ``now``."""
        if self._heap and self._heap[0].due <= now:
            return heapq.heappop(self._heap)
        return None

    def again(self, held: _Held, due: float) -> None:
        """Hold an entry whose run could not be settled (its retry or dead-letter place was
        unreachable) until ``due``; it stays unacked meanwhile."""
        heapq.heappush(self._heap, _Held(due, next(self._seq), held.slot, held.entry, held.key))

    def done(self, held: _Held) -> None:
        """The entry's run is settled: ack it, and every entry behind it already done."""
        held.slot.done = True
        self._keys.discard(held.key)
        self._ack_done()

    def _ack_done(self) -> None:
        while self._arrived and self._arrived[0].done:
            self._arrived.popleft().delivery.ack()
