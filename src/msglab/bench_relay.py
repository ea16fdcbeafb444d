"""``msglab bench relay``: the outbox relay's throughput and its commit-to-publish latency.

Throughput: the outbox is filled with ``messages`` rows (keys spread over 64 key shares), then
drained by ``instances`` relays at once, each a ``Relay`` on its own thread and connection, until
every row is marked: first into a publisher that confirms at once without a broker (**the raw
drain**: claim, build the messages, mark, what the database allows), then into the transport.
The best of ``rounds`` each. Rows/s = rows / (first claim to last mark).

Latency: one writer commits one message per transaction at ``rate`` commits/s for ``seconds``
while one relay runs; a commit's latency is from its ``COMMIT`` returning to the broker's
confirm of its message (the relay's ``midway`` hook, after the publish). Once with the relay
woken by each commit (LISTEN/NOTIFY), once polling every 50 ms (``Relay(listen=False,
poll_s=0.05)``, msglab's relay before LISTEN).
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from msglab.db import engine
from msglab.message import Message
from msglab.outbox import Outbox, Relay
from msglab.ports import Transport

Progress = Callable[[str], None]
FILL_CHUNK = 10_000
"""Rows per fill transaction."""
POLL_S = 0.05
"""The poll interval the latency is compared with (the relay's before LISTEN)."""


class Confirming:
    """A publisher that confirms at once and keeps nothing: the raw drain's."""

    def publish(self, topic: str, messages: Iterable[Message]) -> None:
        for _ in messages:
            pass

    def close(self) -> None:
        pass


@dataclass
class RelayBench:
    transport: str
    database: str
    messages: int
    batch: int
    drains: dict[str, float] = field(default_factory=dict)  # "raw x2" / "kafka x2": rows/s
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # mode: p50/p99/max
    rate: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "operation": "relay",
            "transport": self.transport,
            "database": self.database,
            "messages": self.messages,
            "batch": self.batch,
            "rows_per_s": {k: round(v) for k, v in self.drains.items()},
            "commit_to_publish_ms": self.latency_ms,
            "commits_per_s": self.rate,
        }


def _fill(db_url: str, topic: str, n: int, size: int) -> None:
    db = engine(db_url)
    payload = b"x" * size
    try:
        for start in range(0, n, FILL_CHUNK):
            batch = [
                Message(payload, f"k{i % 1000}") for i in range(start, min(n, start + FILL_CHUNK))
            ]
            with db.begin() as conn:
                Outbox.add(conn, topic, batch, notify=False)
    finally:
        db.dispose()


def _drain(
    db_url: str, publishers: Sequence[object], topic: str, n: int, batch: int
) -> float:
    """Rows/s of ``len(publishers)`` relays draining ``n`` rows of ``topic``."""
    db = engine(db_url)
    done = threading.Event()
    relays = [
        Relay(db, p, batch_size=batch, topics=[topic], listen=False, poll_s=0.01)  # type: ignore[arg-type]
        for p in publishers
    ]
    for r in relays:
        if r.shares is not None:
            r.shares.rebalance_s = 0.05  # share out at once: the bench times the drain
    threads = [threading.Thread(target=r.run, args=(done,)) for r in relays]
    start = time.perf_counter()
    for t in threads:
        t.start()
    while sum(r.stats.published for r in relays) < n:
        time.sleep(0.002)
    elapsed = time.perf_counter() - start
    done.set()
    for t in threads:
        t.join()
    db.dispose()
    return n / elapsed


def bench_relay_drain(
    transport: Transport,
    db_url: str,
    messages: int,
    batch: int,
    instances: Sequence[int],
    rounds: int,
    size: int = 100,
    progress: Progress = lambda _: None,
) -> dict[str, float]:
    """Rows/s of the raw drain and of the drain into ``transport``, per relay count."""
    results: dict[str, float] = {}
    for k in instances:
        for label in ("raw", transport.name):
            best = 0.0
            for r in range(rounds):
                topic = f"bench-relay-{uuid.uuid4().hex[:8]}"
                progress(f"{label} x{k}, round {r + 1}: filling {messages} rows")
                _fill(db_url, topic, messages, size)
                progress(f"{label} x{k}, round {r + 1}: draining")
                pubs: list[object] = (
                    [Confirming() for _ in range(k)]
                    if label == "raw"
                    else [transport.publisher() for _ in range(k)]
                )
                try:
                    best = max(best, _drain(db_url, pubs, topic, messages, batch))
                finally:
                    for p in pubs:
                        p.close()  # type: ignore[attr-defined]
            results[f"{label} x{k}"] = best
    return results


def bench_relay_latency(
    transport: Transport,
    db_url: str,
    rate: float,
    seconds: float,
    progress: Progress = lambda _: None,
) -> dict[str, dict[str, float]]:
    """Commit-to-publish latency (ms: p50, p99, max) at ``rate`` commits/s, woken by each
    commit and polling every ``POLL_S``."""
    out: dict[str, dict[str, float]] = {}
    for mode in ("listen", "poll 50 ms"):
        progress(f"latency, {mode}: {rate:.0f} commits/s for {seconds:.0f} s")
        db = engine(db_url)
        topic = f"bench-relay-{uuid.uuid4().hex[:8]}"
        committed: dict[str, float] = {}
        confirmed: dict[str, float] = {}

        def seen(ids: list[str]) -> None:
            now = time.perf_counter()
            for i in ids:
                confirmed[i] = now

        publisher = transport.publisher()
        publisher.publish(topic, [Message(b"warm")])  # the connection and topic exist first
        relay = Relay(
            db,
            publisher,
            topics=[topic],
            listen=mode == "listen",
            poll_s=None if mode == "listen" else POLL_S,
            midway=seen,
        )
        stop = threading.Event()
        thread = threading.Thread(target=relay.run, args=(stop,))
        thread.start()
        time.sleep(0.5)  # listening, key shares taken
        n = int(rate * seconds)
        start = time.perf_counter()
        for i in range(n):
            wait = start + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            m = Message(b"x" * 100, f"k{i % 64}")
            with db.begin() as conn:
                Outbox.add(conn, topic, [m], notify=mode == "listen")
            committed[m.id] = time.perf_counter()
        deadline = time.monotonic() + 10
        while len(confirmed) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        thread.join()
        publisher.close()
        db.dispose()
        waits = sorted((confirmed[i] - t) * 1000 for i, t in committed.items() if i in confirmed)
        out[mode] = {
            "p50": round(statistics.median(waits), 2),
            "p99": round(waits[max(0, int(len(waits) * 0.99) - 1)], 2),
            "max": round(waits[-1], 2),
            "missing": float(n - len(waits)),
        }
    return out
