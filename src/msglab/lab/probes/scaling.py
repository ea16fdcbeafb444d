"""Kafka scales by brokers: one producer writes to a topic whose partitions all live on one
broker, then to a topic whose partitions are spread over two brokers (``kafka`` and the
on-demand ``kafka2``, both running throughout, so only the placement differs).

Each layout is measured twice:

* capped: each broker lets the probe's client write at most ``QUOTA_BYTES_PER_S`` (a Kafka
  client quota, which every broker enforces on its own), standing in for what one broker's
  disk and network can take. Spread over two brokers the producer should get about twice
  as much: that is the claim (partition leaders spread the load over the brokers). It gets
  somewhat less (1.7-1.9x here): the producer waits for each chunk's confirmations from both
  brokers, so a throttle on either one holds up the next chunk for both.
* uncapped: as fast as the brokers take it here. Both brokers share this machine's cores,
  disk and page cache, so a second broker can add no capacity: whatever ratio comes out is
  reported as measured, not as the claim.

The producer is msglab's Kafka publisher (at-least-once: acks=all, idempotent), writing
``MESSAGE_BYTES`` messages in chunks; each chunk's confirmation time and count is kept in
the figures (``series``: seconds since start, messages confirmed), and the rate is the
least-squares slope of the series after a warm-up (in the first second a quota lets a burst
through). Each layout is
measured twice, in alternating order, and the better round counts (what the layout can do).
"""

from __future__ import annotations

import time
from typing import Any

from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.errors import UsageError
from msglab.infra import backend_for, service_url
from msglab.infra.kafka import Kafka, Kafka2
from msglab.message import Message
from msglab.ports import Publisher, TopicAdmin
from msglab.profiles import DeliveryProfile
from msglab.settings import Settings

PARTITIONS = 4
MESSAGE_BYTES = 4096
QUOTA_BYTES_PER_S = 1_000_000
WARMUP_S = 1.5
CLIENT_ID = "msglab-probe-scaling"
LAYOUTS = ("one-broker", "two-brokers")


def run(variant: str, settings: Settings, quick: bool) -> tuple[dict[str, Any], str]:
    del variant  # one variant: kafka-brokers
    if settings.backend != "native":
        raise UsageError("the scaling probe needs msglab's own brokers (backend native)")
    seconds = {"capped": 6.0 if quick else 8.0, "uncapped": 2.5 if quick else 4.0}
    backend = backend_for(settings)
    backend.up(["kafka"])
    backend.down(["kafka2"])  # a stopped broker is fenced: new partitions go to node 1 only
    config = ClientConfig(
        url=service_url(settings, "kafka"),
        profile=DeliveryProfile.AT_LEAST_ONCE,
        client_id=CLIENT_ID,
        partitions=PARTITIONS,
    )
    transport = open_transport("kafka", config)
    publisher = transport.publisher()
    stamp = time.time_ns()
    topics = {layout: f"probe-scaling-{layout}-{stamp}" for layout in LAYOUTS}
    first, second = Kafka(settings), Kafka2(settings)
    try:
        publisher.publish(topics["one-broker"], [Message(b"create")])
        backend.up(["kafka2"])
        publisher.publish(topics["two-brokers"], [Message(b"create")])
        placement = {layout: _placement(topic, first, second) for layout, topic in topics.items()}
        figures: dict[str, Any] = {
            "message_bytes": MESSAGE_BYTES,
            "partitions": PARTITIONS,
            "quota_bytes_per_s_per_broker": QUOTA_BYTES_PER_S,
            "warmup_s": WARMUP_S,
            "placement": placement,
        }
        for mode in ("uncapped", "capped"):
            first.set_producer_quota(CLIENT_ID, QUOTA_BYTES_PER_S if mode == "capped" else None)
            figures[mode] = _rounds(publisher, topics, mode, seconds[mode])
            one, two = (figures[mode][layout]["best_msgs_per_s"] for layout in LAYOUTS)
            figures[f"{mode}_ratio"] = round(two / one, 2) if one else 0.0
    finally:
        publisher.close()
        first.set_producer_quota(CLIENT_ID, None)
        if isinstance(transport, TopicAdmin):
            for topic in topics.values():
                transport.delete_topic(topic, [])
        backend.down(["kafka2"])
    return figures, _measured(figures)


def _placement(topic: str, *brokers: Kafka, wait_s: float = 10.0) -> dict[str, list[int]]:
    """Which broker keeps which partition of ``topic``: a broker makes a partition's log when
    it learns it leads it, which may come after a producer's first write to another partition,
    so this waits (up to ``wait_s``) until every partition has a broker."""
    deadline = time.monotonic() + wait_s
    while True:
        found = {b.name: b.hosted_partitions(topic) for b in brokers}
        if sum(map(len, found.values())) >= PARTITIONS or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _rounds(
    publisher: Publisher, topics: dict[str, str], mode: str, seconds: float
) -> dict[str, dict[str, Any]]:
    """Each layout measured twice, in alternating order (neither always first); the best
    round counts."""
    chunk = 1000 if mode == "uncapped" else 50
    payload = bytes(MESSAGE_BYTES)
    rounds: dict[str, list[dict[str, Any]]] = {layout: [] for layout in LAYOUTS}
    for order in (LAYOUTS, LAYOUTS[::-1]):
        for layout in order:
            rounds[layout].append(_measure(publisher, topics[layout], payload, chunk, seconds))
    return {
        layout: {
            "best_msgs_per_s": _best(runs, "msgs_per_s"),
            "best_mb_per_s": _best(runs, "mb_per_s"),
            "rounds": runs,
        }
        for layout, runs in rounds.items()
    }


def _measure(
    publisher: Publisher, topic: str, payload: bytes, chunk: int, seconds: float
) -> dict[str, Any]:
    """Publish ``chunk`` messages at a time for ``seconds``; the rate after the warm-up."""
    series: list[tuple[float, int]] = []
    confirmed = 0
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) < seconds:
        publisher.publish(topic, [Message(payload) for _ in range(chunk)])
        confirmed += chunk
        series.append((round(time.monotonic() - began, 4), confirmed))
    rate = _slope([p for p in series if p[0] >= WARMUP_S] or series)
    return {
        "messages": confirmed,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(rate, 1),
        "mb_per_s": round(rate * len(payload) / 1e6, 3),
        "series": series,
    }


def _slope(points: list[tuple[float, int]]) -> float:
    """The least-squares slope of confirmed messages over time: a throttled producer's chunks
    complete in clumps, and a slope between two chosen points would depend on where they fall."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_n = sum(n for _, n in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (n - mean_n) for t, n in points) / var if var else 0.0


def _best(runs: list[dict[str, Any]], key: str) -> float:
    return float(max(run[key] for run in runs))


def _measured(f: dict[str, Any]) -> str:
    def rates(mode: str) -> str:
        one, two = (f[mode][layout]["best_mb_per_s"] for layout in LAYOUTS)
        return f"1 broker {one:.2f} MB/s, 2 brokers {two:.2f} MB/s (x{f[f'{mode}_ratio']:.2f})"

    spread = "/".join(str(len(p)) for p in f["placement"]["two-brokers"].values())
    return (
        f"capped at {f['quota_bytes_per_s_per_broker'] / 1e6:.1f} MB/s per broker: "
        f"{rates('capped')}; uncapped on this machine: {rates('uncapped')}; "
        f"partitions per broker {spread}"
    )
