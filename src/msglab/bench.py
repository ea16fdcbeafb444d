"""``msglab bench``: msglab's transport beside the raw client doing the same job, in one process.

Publish: the same pre-built messages are published by msglab (one ``publish`` call, then
``close``) and by each raw-client baseline (its own connection, same settings), alternating for
``rounds`` rounds; the best round of each counts. Both connect and send one message before
the clock starts, so connection set-up (and Kafka's producer-id handshake) is not timed.
Consume: a fresh topic is filled, then msglab and the raw client each drain it in their own
consumer group; the time runs from the first message to the last (group joins not counted).
Redis pub/sub stores nothing, so its consumers subscribe first and the messages are published
while they listen.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.errors import UsageError
from msglab.jobs import make_messages
from msglab.message import Message
from msglab.ports import RawConsume, RawPublish, TopicAdmin, Transport

Progress = Callable[[str], None]


@dataclass
class BenchResult:
    operation: str
    transport: str
    profile: str
    messages: int
    size: int
    msglab_msgs_per_s: float
    raw_name: str | None
    baselines: dict[str, float] = field(default_factory=dict)
    delivered: dict[str, int] = field(default_factory=dict)

    @property
    def raw_msgs_per_s(self) -> float | None:
        return self.baselines.get(self.raw_name) if self.raw_name else None

    @property
    def ratio(self) -> float | None:
        raw = self.raw_msgs_per_s
        return self.msglab_msgs_per_s / raw if raw else None

    def mb_per_s(self, msgs_per_s: float) -> float:
        return msgs_per_s * self.size / 1e6

    def to_json(self) -> dict[str, object]:
        return {
            "operation": self.operation,
            "transport": self.transport,
            "profile": self.profile,
            "messages": self.messages,
            "size": self.size,
            "msglab_msgs_per_s": round(self.msglab_msgs_per_s, 1),
            "msglab_mb_per_s": round(self.mb_per_s(self.msglab_msgs_per_s), 3),
            "raw": self.raw_name,
            "raw_msgs_per_s": round(self.raw_msgs_per_s, 1) if self.raw_msgs_per_s else None,
            "ratio": round(self.ratio, 3) if self.ratio else None,
            "baselines": {k: round(v, 1) for k, v in self.baselines.items()},
            "delivered": self.delivered,
        }


def _module(transport: Transport) -> object:
    return sys.modules[type(transport).__module__]


def _raw_publishers(transport: Transport) -> dict[str, RawPublish]:
    factory = getattr(_module(transport), "raw_publishers", None)
    return dict(factory(transport.config.profile)) if factory else {}


def _raw_consumers(transport: Transport) -> dict[str, RawConsume]:
    return dict(getattr(_module(transport), "RAW_CONSUMERS", {}))


def _declare(transport: Transport, topic: str, groups: list[str]) -> None:
    """Create the topic and the groups' queues before anything is published into them."""
    for group in groups:
        sub = transport.subscriber(group)
        sub.subscribe(topic)
        sub.close()


def bench_publish(
    name: str,
    config: ClientConfig,
    messages: int,
    size: int,
    rounds: int = 2,
    progress: Progress | None = None,
) -> BenchResult:
    transport = open_transport(name, config)
    raws = _raw_publishers(transport)
    batch = make_messages(messages, size, keys=8)
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    _declare(transport, topic, ["bench"])
    result = BenchResult(
        "publish", name, config.profile.value, messages, size, 0.0, next(iter(raws), None)
    )
    try:
        for r in range(rounds):
            if progress:
                progress(f"round {r + 1}/{rounds}: msglab")
            rate = _time_msglab_publish(transport, topic, batch)
            result.msglab_msgs_per_s = max(result.msglab_msgs_per_s, rate)
            for raw_name, raw in raws.items():
                if progress:
                    progress(f"round {r + 1}/{rounds}: {raw_name}")
                sent, seconds = raw(config, topic, batch)
                result.baselines[raw_name] = max(
                    result.baselines.get(raw_name, 0.0), sent / seconds
                )
    finally:
        _clean(transport, topic, ["bench"])
    return result


def _clean(transport: Transport, topic: str, groups: list[str]) -> None:
    """Leave the broker as it was: the benchmark's topic and queues are deleted."""
    if isinstance(transport, TopicAdmin):
        transport.delete_topic(topic, groups)


def _time_msglab_publish(transport: Transport, topic: str, batch: list[Message]) -> float:
    """Like the raw baselines: connect and warm up with the first message, time the rest
    (publish returns once all are confirmed as the profile requires) and the close."""
    pub = transport.publisher()
    try:
        pub.publish(topic, batch[:1])
        began = time.perf_counter()
        pub.publish(topic, batch[1:])
    finally:
        pub.close()
    return (len(batch) - 1) / (time.perf_counter() - began)


def _drain(
    transport: Transport, topic: str, group: str, count: int, idle_s: float, ready: threading.Event
) -> tuple[int, float]:
    """The raw consumers' job done through msglab: take each delivery's message, ack it.
    Returns the count and the seconds from the first delivery to the last."""
    sub = transport.subscriber(group)
    deliveries = sub.subscribe(topic)
    ready.set()
    timer = threading.Timer(idle_s, sub.close)  # nothing at all: give up
    timer.start()
    got, first, last = 0, 0.0, 0.0
    try:
        for d in deliveries:
            _message = d.message
            d.ack()
            got += 1
            last = time.perf_counter()
            if not first:
                first = last
                timer.cancel()
            if got >= count:
                break
    finally:
        timer.cancel()
        sub.close()
    return got, last - first


def bench_consume(
    name: str,
    config: ClientConfig,
    messages: int,
    size: int,
    rounds: int = 3,
    progress: Progress | None = None,
) -> BenchResult:
    """Drain ``messages`` with msglab and with each raw consumer, ``rounds`` times each, every
    drain with a group of its own on the same topic (msglab first in odd rounds, last in even
    ones); the best rate of each counts, as for publish."""
    transport = open_transport(name, config)
    raws = _raw_consumers(transport)
    if not raws:
        raise UsageError(f"{name} has no raw-client consume baseline")
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    contenders = ["msglab", *raws]
    groups = {(c, r): f"bench-{i}-{r}" for i, c in enumerate(contenders) for r in range(rounds)}
    result = BenchResult(
        "consume", name, config.profile.value, messages, size, 0.0, next(iter(raws))
    )
    batch = make_messages(messages, size, keys=8)
    stores = transport.stores_messages
    if stores:
        _declare(transport, topic, list(groups.values()))
        pub = transport.publisher()
        pub.publish(topic, batch)
        pub.close()

    def fill_while_listening(ready: threading.Event) -> None:
        if not stores:
            ready.wait(30)
            pub = transport.publisher()
            pub.publish(topic, batch)
            pub.close()

    try:
        for r in range(rounds):
            for contender in contenders if r % 2 == 0 else reversed(contenders):
                if progress:
                    progress(f"round {r + 1}/{rounds}: {contender}")
                ready = threading.Event()
                filler = threading.Thread(target=fill_while_listening, args=(ready,), daemon=True)
                filler.start()
                group = groups[(contender, r)]
                if contender == "msglab":
                    got, seconds = _drain(transport, topic, group, messages, 5.0, ready)
                else:
                    got, seconds = raws[contender](config, topic, group, messages, 5.0, ready)
                filler.join()
                rate = got / max(seconds, 1e-9)
                if contender == "msglab":
                    result.msglab_msgs_per_s = max(result.msglab_msgs_per_s, rate)
                else:
                    result.baselines[contender] = max(result.baselines.get(contender, 0.0), rate)
                result.delivered[contender] = min(result.delivered.get(contender, got), got)
    finally:
        _clean(transport, topic, list(groups.values()))
    return result
