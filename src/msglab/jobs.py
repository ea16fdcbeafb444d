"""Publish and consume jobs behind ``msglab publish``, ``consume`` and ``roundtrip``.

Each job takes a Transport (from the registry), does one thing, and returns a summary with
counts; ``progress`` (when given) is called with the number of messages done so far.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from msglab.errors import PublishError
from msglab.message import Delivery, Message
from msglab.ports import Transport

Progress = Callable[[int], None]
BATCH = 1000


def make_messages(count: int, size: int, keys: int, start: int = 0) -> list[Message]:
    """``count`` messages with ``size``-byte payloads, keys ``k0..k{keys-1}``, a ``seq`` header."""
    filler = b"x" * size
    return [
        Message(payload=filler, key=f"k{(start + i) % keys}", headers={"seq": str(start + i)})
        for i in range(count)
    ]


@dataclass
class PublishSummary:
    transport: str
    topic: str
    profile: str
    sent: int = 0
    confirmed: int = 0
    failed: int = 0
    unknown: int = 0
    seconds: float = 0.0
    bytes: int = 0

    @property
    def msgs_per_s(self) -> float:
        return self.confirmed / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "msgs_per_s": round(self.msgs_per_s, 1)}


def publish_job(
    transport: Transport,
    topic: str,
    count: int,
    size: int,
    keys: int = 8,
    progress: Progress | None = None,
) -> PublishSummary:
    """Publish ``count`` messages in batches; failures are counted, not raised."""
    summary = PublishSummary(transport.name, topic, transport.config.profile.value)
    pub = transport.publisher()
    began = time.perf_counter()
    try:
        for start in range(0, count, BATCH):
            batch = make_messages(min(BATCH, count - start), size, keys, start)
            summary.sent += len(batch)
            summary.bytes += size * len(batch)
            try:
                pub.publish(topic, batch)
                summary.confirmed += len(batch)
            except PublishError as exc:
                summary.failed += len(exc.failed)
                summary.unknown += len(exc.unknown)
                summary.confirmed += len(batch) - len(exc.failed) - len(exc.unknown)
            if progress:
                progress(summary.sent)
    finally:
        pub.close()
    summary.seconds = time.perf_counter() - began
    return summary


@dataclass
class ConsumeSummary:
    transport: str
    topic: str
    group: str
    deliveries: int = 0
    distinct: int = 0
    duplicates: int = 0
    redelivered: int = 0
    seconds: float = 0.0
    first_to_last_s: float = 0.0
    samples: list[dict[str, object]] = field(default_factory=list)

    @property
    def msgs_per_s(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "msgs_per_s": round(self.msgs_per_s, 1)}


def describe(d: Delivery) -> dict[str, object]:
    m = d.message
    return {
        "id": m.id,
        "key": m.key,
        "headers": dict(m.headers),
        "size": len(m.payload),
        "attempt": d.attempt,
        "redelivered": d.redelivered,
        "payload": m.payload[:60].decode("utf-8", "replace"),
    }


def consume_job(
    transport: Transport,
    topic: str,
    group: str,
    count: int,
    idle_s: float,
    progress: Progress | None = None,
    keep: int = 0,
    ready: threading.Event | None = None,
) -> ConsumeSummary:
    """Consume until ``count`` deliveries or ``idle_s`` without one; ack each after counting.

    ``ready`` is set once the subscription exists (for a caller that publishes afterwards).
    """
    summary = ConsumeSummary(transport.name, topic, group)
    sub = transport.subscriber(group)
    deliveries = sub.subscribe(topic)
    if ready is not None:
        ready.set()
    seen: set[str] = set()
    clock = _IdleClock(idle_s, sub.close)
    began = time.perf_counter()
    first = 0.0
    try:
        for d in deliveries:
            now = clock.tick()
            first = first or now
            summary.deliveries += 1
            summary.redelivered += d.redelivered
            if d.message.id in seen:
                summary.duplicates += 1
            seen.add(d.message.id)
            if len(summary.samples) < keep:
                summary.samples.append(describe(d))
            d.ack()
            if progress and summary.deliveries % 500 == 0:
                progress(summary.deliveries)
            if summary.deliveries >= count:
                break
    finally:
        clock.stop()
        sub.close()
    summary.seconds = time.perf_counter() - began
    summary.first_to_last_s = clock.last - first if first else 0.0
    if progress:
        progress(summary.deliveries)
    summary.distinct = len(seen)
    return summary


class _IdleClock:
    """Calls ``on_idle`` once no ``tick()`` came for ``idle_s`` (from a watchdog thread)."""

    def __init__(self, idle_s: float, on_idle: Callable[[], None]) -> None:
        self._idle_s = idle_s
        self.last = time.perf_counter()
        self._stopped = threading.Event()
        self._on_idle = on_idle
        threading.Thread(target=self._watch, daemon=True).start()

    def tick(self) -> float:
        """Record activity now; returns the time (``time.perf_counter``)."""
        self.last = now = time.perf_counter()
        return now

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(0.05):
            if time.perf_counter() - self.last > self._idle_s:
                self._on_idle()
                return


@dataclass
class RoundTrip:
    publish: PublishSummary
    consume: ConsumeSummary

    def to_json(self) -> dict[str, object]:
        return {"publish": self.publish.to_json(), "consume": self.consume.to_json()}


def round_trip(
    transport: Transport, topic: str, count: int, size: int, idle_s: float = 5.0
) -> RoundTrip:
    """Subscribe a group, publish ``count`` messages, consume them: both sides' counts."""
    ready = threading.Event()
    consumed: list[ConsumeSummary] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            consumed.append(consume_job(transport, topic, "roundtrip", count, idle_s, ready=ready))
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    ready.wait(30)
    if errors:
        raise errors[0]
    published = publish_job(transport, topic, count, size)
    thread.join()
    if errors:
        raise errors[0]
    return RoundTrip(published, consumed[0])
