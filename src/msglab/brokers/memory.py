"""The in-memory reference transport, for unit tests of what is built on the ports.

Mapping: a topic is an append-only log; a consumer group reads it from the beginning, shares
messages between its members, and keeps what a member received but did not ack (on nack or
close it is delivered again, ``redelivered`` set and ``attempt`` counted). Everything lives in
this process (``memory://<name>`` names one broker) and is lost with it: it never stands in
for a real broker in a test that claims something about that broker.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from msglab.config import ClientConfig, check_name
from msglab.errors import UsageError
from msglab.lag import Lag
from msglab.message import Delivery, Message
from msglab.ports import Publisher, Subscriber
from msglab.profiles import refuse_exactly_once
from msglab.subscription import SubscriberBase


@dataclass
class _Group:
    next_index: int = 0
    redeliver: deque[int] = field(default_factory=deque)
    attempts: dict[int, int] = field(default_factory=dict)
    out: set[int] = field(default_factory=set)  # handed to a member, not settled


class MemoryBroker:
    """Topics and groups of one in-memory broker; every method is thread-safe."""

    def __init__(self) -> None:
        self._logs: dict[str, list[Message]] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._changed = threading.Condition()

    def append(self, topic: str, messages: list[Message]) -> None:
        with self._changed:
            self._logs.setdefault(topic, []).extend(messages)
            self._changed.notify_all()

    def take(self, topic: str, group: str, timeout_s: float) -> tuple[int, Message, int] | None:
        """The next message for ``group`` (index, message, attempt), or None after timeout."""
        with self._changed:
            g = self._groups.setdefault((topic, group), _Group())
            log = self._logs.setdefault(topic, [])
            if not g.redeliver and g.next_index >= len(log):
                self._changed.wait(timeout_s)
            if g.redeliver:
                index = g.redeliver.popleft()
            elif g.next_index < len(log):
                index = g.next_index
                g.next_index += 1
            else:
                return None
            g.attempts[index] = g.attempts.get(index, 0) + 1
            g.out.add(index)
            return index, log[index], g.attempts[index]

    def settle(self, topic: str, group: str, index: int, ok: bool, requeue: bool) -> None:
        with self._changed:
            g = self._groups[(topic, group)]
            g.out.discard(index)
            if not ok and requeue:
                g.redeliver.append(index)
                self._changed.notify_all()

    def lag(self, topic: str, group: str) -> Lag:
        """The group's Lag: not yet taken (or nacked back), and taken but not settled."""
        with self._changed:
            if topic not in self._logs:
                raise UsageError(f"memory: no topic {topic!r}")
            g = self._groups.get((topic, group), _Group())
            ready = len(self._logs[topic]) - g.next_index + len(g.redeliver)
            return Lag(topic, ready + len(g.out), ready, len(g.out))

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()


_BROKERS: dict[str, MemoryBroker] = {}
_BROKERS_LOCK = threading.Lock()


def broker(url: str) -> MemoryBroker:
    with _BROKERS_LOCK:
        return _BROKERS.setdefault(url, MemoryBroker())


class MemoryPublisher:
    def __init__(self, transport: MemoryTransport) -> None:
        self._t = transport
        self._closed = False

    def publish(self, topic: str, messages: Iterable[Message]) -> None:
        if self._closed:
            raise UsageError("publisher is closed")
        check_name("topic", topic)
        batch = list(messages)
        for m in batch:
            self._t.config.check_payload(len(m.payload))
        self._t.broker.append(topic, batch)

    def close(self) -> None:
        self._closed = True


class MemorySubscriber(SubscriberBase):
    def __init__(self, transport: MemoryTransport, group: str) -> None:
        super().__init__(group)
        self._t = transport
        self._unsettled: dict[int, Delivery] = {}
        self._topic = ""

    def _open(self, topic: str) -> None:
        self._topic = topic

    def _deliveries(self, topic: str) -> Iterator[Delivery | None]:
        b = self._t.broker
        while not self._closed.is_set():
            taken = b.take(topic, self._group, 0.05)
            if taken is None:
                yield None
                continue
            index, message, attempt = taken
            delivery = Delivery(message, topic, attempt, attempt > 1, self._settle, index)
            self._unsettled[index] = delivery
            yield delivery

    def _settle(self, d: Delivery, ok: bool, requeue: bool) -> None:
        self._unsettled.pop(d.token, None)
        self._t.broker.settle(self._topic, self._group, d.token, ok, requeue)

    def _release(self) -> None:
        """What this member received but did not settle goes back to its group (a lost
        connection on a real broker)."""
        for delivery in list(self._unsettled.values()):
            delivery.nack(requeue=True)

    def close(self) -> None:
        super().close()
        self._t.broker.wake()


class MemoryTransport:
    name = "memory"
    stores_messages = True

    def __init__(self, config: ClientConfig) -> None:
        refuse_exactly_once(self.name, config.profile)
        self.config = config
        self.broker = broker(config.url)

    def publisher(self) -> Publisher:
        return MemoryPublisher(self)

    def subscriber(self, group: str) -> Subscriber:
        return MemorySubscriber(self, group)

    def lag(self, topic: str, group: str) -> list[Lag]:
        """One Lag: the topic's log for the group, counted exactly."""
        return [self.broker.lag(check_name("topic", topic), check_name("group", group))]

    @classmethod
    def profile_settings(cls) -> dict[str, dict[str, str]]:
        same = {"storage": "this process's memory", "ack": "after the handler"}
        return {"at-most-once": same, "at-least-once": same}
