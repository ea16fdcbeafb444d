"""``msglab bench relay``: the outbox relay's throughput and its commit-to-publish latency.

Throughput: the outbox is filled with ``messages`` rows (keys spread over 64 key shares), then
drained by ``instances`` relays at once, each a ``Relay`` on its own thread and connection, until
every row is marked: first into a publisher that confirms at once without a broker (**the raw
drain**: claim, build the messages, mark, what the database allows), then into the transport.
The best of ``rounds`` each. Rows/s = rows / (first claim to last mark). Each drain starts
after a ``VACUUM`` of the outbox (where the user may): the drain before it left as many dead
rows as it moved, and whether autovacuum had come by would decide the next figure.

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
from typing import Any

from msglab.db import engine
from msglab.extras import driver_import
from msglab.message import Message
from msglab.outbox import Outbox, Relay
from msglab.ports import Transport

with driver_import("sqlite", __name__):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

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
    drains: dict[str, float] = field(default_factory=dict)  # "kafka x2 delete": rows/s
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


def prepare(db_url: str) -> None:
    """The outbox table, created when missing."""
    db = engine(db_url)
    try:
        Outbox(db).create_table()
    finally:
        db.dispose()


def _vacuum(db_url: str) -> None:
    """Clear the dead rows the last drain left (each drain starts on a clean table, not on the
    previous one's garbage, whenever autovacuum came by); nothing where the user may not."""
    db = engine(db_url)
    try:
        with db.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM msglab_outbox")
            )
    except DBAPIError:
        pass
    finally:
        db.dispose()


def _fill(db_url: str, topic: str, n: int, size: int) -> None:
    _vacuum(db_url)
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
    db_url: str, publishers: Sequence[Any], topic: str, n: int, batch: int, keep_s: float | None
) -> float:
    """Rows/s of ``len(publishers)`` relays draining ``n`` rows of ``topic``."""
    db = engine(db_url)
    done = threading.Event()
    relays = [
        Relay(db, p, batch_size=batch, topics=[topic], listen=False, poll_s=0.01, keep_s=keep_s)
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


KEEPS: dict[str, float | None] = {"delete": 0, "mark": None}
"""What a drain does with a published row: deletes it (the default) or marks it sent."""


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
    """Rows/s (best of ``rounds``) of the raw drain and of the drain into ``transport``, per
    relay count and per ``KEEPS`` mode: ``{"kafka x1 delete": ...}``."""
    results: dict[str, float] = {}
    for k in instances:
        for mode, keep_s in KEEPS.items():
            for label in ("raw", transport.name):
                name = f"{label} x{k} {mode}"
                best = 0.0
                for r in range(rounds):
                    topic = f"bench-relay-{uuid.uuid4().hex[:8]}"
                    progress(f"{name}, round {r + 1}: filling {messages} rows")
                    _fill(db_url, topic, messages, size)
                    progress(f"{name}, round {r + 1}: draining")
                    pubs = [
                        Confirming() if label == "raw" else transport.publisher() for _ in range(k)
                    ]
                    try:
                        best = max(best, _drain(db_url, pubs, topic, messages, batch, keep_s))
                    finally:
                        for p in pubs:
                            p.close()
                results[name] = best
    return results


def _latency_run(
    transport: Transport, db_url: str, listen: bool, rate: float, n: int
) -> list[float]:
    """Commit ``n`` one-message transactions at ``rate``/s with one relay running; each
    confirmed message's commit-to-confirm time (ms), sorted."""
    db = engine(db_url)
    topic = f"bench-relay-{uuid.uuid4().hex[:8]}"
    committed: dict[str, float] = {}
    confirmed: dict[str, float] = {}

    def seen(ids: list[str]) -> None:
        now = time.perf_counter()
        for i in ids:
            confirmed[i] = now

    publisher = transport.publisher()
    publisher.publish(topic, [Message(b"warm")])  # the connection and the topic exist first
    relay = Relay(
        db, publisher, topics=[topic], listen=listen, poll_s=None if listen else POLL_S, midway=seen
    )
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,))
    thread.start()
    time.sleep(0.5)  # listening, key shares taken
    start = time.perf_counter()
    for i in range(n):
        wait = start + i / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        m = Message(b"x" * 100, f"k{i % 64}")
        with db.begin() as conn:
            Outbox.add(conn, topic, [m], notify=listen)
        committed[m.id] = time.perf_counter()
    deadline = time.monotonic() + 10
    while len(confirmed) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join()
    publisher.close()
    db.dispose()
    return sorted((confirmed[i] - t) * 1000 for i, t in committed.items() if i in confirmed)


def bench_relay_latency(
    transport: Transport,
    db_url: str,
    rate: float,
    seconds: float,
    progress: Progress = lambda _: None,
) -> dict[str, dict[str, float]]:
    """Commit-to-publish latency (ms: p50, p99, max; ``missing``: never confirmed) at
    ``rate`` commits/s for ``seconds``: woken by each commit (PostgreSQL), and polling every
    ``POLL_S``."""
    out: dict[str, dict[str, float]] = {}
    n = int(rate * seconds)
    modes = {"listen": True, "poll 50 ms": False}
    if not db_url.startswith("postgres"):
        del modes["listen"]  # SQLite has no notifications
    for mode, listen in modes.items():
        progress(f"latency, {mode}: {rate:.0f} commits/s for {seconds:.0f} s")
        waits = _latency_run(transport, db_url, listen, rate, n)
        out[mode] = {
            "p50": round(statistics.median(waits), 2),
            "p99": round(waits[max(0, int(len(waits) * 0.99) - 1)], 2),
            "max": round(waits[-1], 2),
            "missing": float(n - len(waits)),
        }
    return out
