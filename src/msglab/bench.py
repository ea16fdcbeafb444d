"""``msglab bench``: msglab's transport beside the raw client doing the same job, in one process.

Publish: the same pre-built messages are published by msglab (one ``publish`` call, then
``close``) and by each raw-client baseline (its own connection, same settings), alternating for
``rounds`` rounds; the best round of each counts. Both connect and send one message before
the clock starts, so connection set-up (and Kafka's producer-id handshake) is not timed.
Consume: a fresh topic is filled, then msglab and the raw client each drain it in their own
consumer group; the time runs from the first message to the last (group joins not counted).
msglab drains through ``Subscriber.batches`` (its fastest consume API, the headline figure)
and through ``subscribe`` (one Delivery per message, reported beside it).
Redis pub/sub stores nothing, so its consumers subscribe first and the messages are published
while they listen. Each drain starts after a full garbage collection, so that none pays for
another's garbage; the collector stays on (what a consumer allocates is part of its cost).
"""

from __future__ import annotations

import gc
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from msglab.bench_worker import WorkerDrain, clean_worker_topics
from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.errors import UsageError
from msglab.jobs import make_messages
from msglab.message import Batch, Delivery, Message
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
    variants: dict[str, float] = field(default_factory=dict)  # other msglab APIs, msgs/s
    delivered: dict[str, int] = field(default_factory=dict)
    cluster: str | None = None  # the replicated cluster it ran on (kafka-cluster), or None
    rss_mb: dict[str, tuple[float, float]] = field(default_factory=dict)
    """The runtime's drains: RSS (MB) when a tenth and when all messages had come (last round)."""

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
            "cluster": self.cluster,
            "profile": self.profile,
            "messages": self.messages,
            "size": self.size,
            "msglab_msgs_per_s": round(self.msglab_msgs_per_s, 1),
            "msglab_mb_per_s": round(self.mb_per_s(self.msglab_msgs_per_s), 3),
            "raw": self.raw_name,
            "raw_msgs_per_s": round(self.raw_msgs_per_s, 1) if self.raw_msgs_per_s else None,
            "ratio": round(self.ratio, 3) if self.ratio else None,
            "baselines": {k: round(v, 1) for k, v in self.baselines.items()},
            "msglab_variants": {k: round(v, 1) for k, v in self.variants.items()},
            "delivered": self.delivered,
            "rss_mb": {k: [round(v, 1) for v in pair] for k, pair in self.rss_mb.items()},
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
    cluster: str | None = None,
) -> BenchResult:
    """``cluster``: the replicated cluster ``config.url`` names, recorded in the result."""
    transport = open_transport(name, config)
    raws = _raw_publishers(transport)
    batch = make_messages(messages, size, keys=8)
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    _declare(transport, topic, ["bench"])
    result = BenchResult(
        "publish",
        name,
        config.profile.value,
        messages,
        size,
        0.0,
        next(iter(raws), None),
        cluster=cluster,
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


PER_DELIVERY = "msglab per delivery"


def _drain(
    transport: Transport,
    topic: str,
    group: str,
    count: int,
    idle_s: float,
    ready: threading.Event,
    per_delivery: bool,
) -> tuple[int, float]:
    """The raw consumers' job done through msglab: read each message, ack each delivery or
    each batch. Returns the count and the seconds from the first to the last."""
    sub = transport.subscriber(group)
    stream: Iterator[Delivery | Batch] = (
        sub.subscribe(topic) if per_delivery else sub.batches(topic, transport.config.prefetch)
    )
    ready.set()
    timer = threading.Timer(idle_s, sub.close)  # nothing at all: give up
    timer.start()
    got, first, last = 0, 0.0, 0.0
    try:
        for item in stream:
            if isinstance(item, Batch):
                for _message in item.messages:  # read (decode) each, as the raw loops do
                    got += 1
            else:
                _message = item.message
                got += 1
            item.ack()
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
    rounds: int = 5,
    progress: Progress | None = None,
    cluster: str | None = None,
    workers: dict[str, WorkerDrain] | None = None,
) -> BenchResult:
    """Drain ``messages`` with msglab and with each raw consumer, ``rounds`` times each, every
    drain with a group of its own on the same topic (msglab first in odd rounds, last in even
    ones); the median rate of each counts. A drain of 20 000 messages takes a tenth of a
    second, and one in five ran 1.5x faster than the others (measured): a best-of would
    report those outliers. ``cluster``: as for ``bench_publish``. ``workers``: the App
    runtime's drains to run beside them (``msglab.bench_worker``), reported as variants."""
    transport = open_transport(name, config)
    raws = _raw_consumers(transport)
    if not raws:
        raise UsageError(f"{name} has no raw-client consume baseline")
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    workers = workers or {}
    contenders = ["msglab", PER_DELIVERY, *workers, *raws]
    groups = {(c, r): f"bench-{i}-{r}" for i, c in enumerate(contenders) for r in range(rounds)}
    result = BenchResult(
        "consume",
        name,
        config.profile.value,
        messages,
        size,
        0.0,
        next(iter(raws)),
        cluster=cluster,
    )
    batch = make_messages(messages, size, keys=8)
    stores = transport.stores_messages
    if stores:
        _declare(transport, topic, list(groups.values()))
        pub = transport.publisher()
        pub.publish(topic, batch)
        pub.close()
        batch = []  # not needed any more: kept, its messages would slow every full collection

    def fill_while_listening(ready: threading.Event) -> None:
        if not stores:
            ready.wait(30)
            pub = transport.publisher()
            pub.publish(topic, batch)
            pub.close()

    rates: dict[str, list[float]] = {c: [] for c in contenders}
    try:
        for r in range(rounds):
            for contender in contenders if r % 2 == 0 else reversed(contenders):
                if progress:
                    progress(f"round {r + 1}/{rounds}: {contender}")
                ready = threading.Event()
                filler = threading.Thread(target=fill_while_listening, args=(ready,), daemon=True)
                filler.start()
                group = groups[(contender, r)]
                gc.collect()  # every drain starts from the same heap: none inherits garbage
                if contender in raws:
                    got, seconds = raws[contender](config, topic, group, messages, 5.0, ready)
                elif contender in workers:
                    drain = workers[contender]
                    got, seconds = drain(transport, topic, group, messages, 5.0, ready)
                    result.rss_mb[contender] = drain.rss
                else:
                    per_delivery = contender == PER_DELIVERY
                    got, seconds = _drain(
                        transport, topic, group, messages, 5.0, ready, per_delivery
                    )
                filler.join()
                rates[contender].append(got / max(seconds, 1e-9))
                result.delivered[contender] = min(result.delivered.get(contender, got), got)
    finally:
        _clean(transport, topic, list(groups.values()))
        if workers:
            clean_worker_topics(transport, topic, list(groups.values()))
    result.msglab_msgs_per_s = statistics.median(rates.pop("msglab"))
    for variant in (PER_DELIVERY, *workers):
        result.variants[variant] = statistics.median(rates.pop(variant))
    result.baselines = {c: statistics.median(r) for c, r in rates.items()}
    return result
