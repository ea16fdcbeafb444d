"""``msglab bench relay``: the outbox relay's throughput and its commit-to-publish latency.

Throughput: the outbox is filled with ``messages`` rows (keys spread over 64 key shares), then
drained by ``instances`` relays at once, each a ``Relay`` in a process of its own (its own
connection and interpreter lock, as relays are deployed), until every row is published: first
into a publisher that confirms at once without a broker (**the raw drain**: claim, build the
messages, delete or mark, what the database allows), then into the transport. The best of
``rounds`` each; rows/s = rows / (the relays' start, their imports and connections done, to
the last row published). Each drain starts after a ``VACUUM`` of the outbox (where the user
may): the drain before it left as many dead rows as it moved, and whether autovacuum had come
by would decide the next figure.

Latency: one writer commits one message per transaction at ``rate`` commits/s for ``seconds``
while one relay runs; a commit's latency is from its ``COMMIT`` returning to the broker's
confirm of its message (the relay's ``midway`` hook, after the publish). Once with the relay
woken by each commit (LISTEN/NOTIFY), once polling every 50 ms (``Relay(listen=False,
poll_s=0.05)``, msglab's relay before LISTEN).
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from msglab.brokers import open_transport
from msglab.config import ClientConfig
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


@dataclass(frozen=True)
class DrainJob:
    """What one relay process of a drain does (picklable: it crosses to a spawned process)."""

    db_url: str
    topic: str
    batch: int
    keep_s: float | None
    transport: str | None  # None: the raw drain (a publisher that confirms at once)
    config: ClientConfig | None


def _relay_process(job: DrainJob, ready: Any, go: Any, stop: Any, published: Any) -> None:
    """One relay in its own process (its own interpreter lock), counting into ``published``."""
    if job.transport is None or job.config is None:
        publisher: Any = Confirming()
    else:
        publisher = open_transport(job.transport, job.config).publisher()
        publisher.publish(job.topic + "-warm", [Message(b"warm")])  # connected, producer id
    db = engine(job.db_url)
    relay = Relay(
        db, publisher, job.batch, topics=[job.topic], listen=False, poll_s=0.01, keep_s=job.keep_s
    )
    if relay.shares is not None:
        relay.shares.rebalance_s = 0.05  # share out at once: the bench times the drain
    done = threading.Event()
    ready.set()
    go.wait()
    thread = threading.Thread(target=relay.run, args=(done,))
    thread.start()
    while not stop.wait(0.002):
        published.value = relay.stats.published
    done.set()
    thread.join()
    published.value = relay.stats.published
    publisher.close()
    db.dispose()


def _drain(jobs: Sequence[DrainJob], n: int) -> float:
    """Rows/s of one relay process per job draining ``n`` rows: from the moment they all
    start (their imports and connections done) to the last row published."""
    ctx = mp.get_context("spawn")
    go, stop = ctx.Event(), ctx.Event()
    ready = [ctx.Event() for _ in jobs]
    counts = [ctx.Value("q", 0, lock=False) for _ in jobs]
    procs = [
        ctx.Process(target=_relay_process, args=(job, r, go, stop, c), daemon=True)
        for job, r, c in zip(jobs, ready, counts, strict=True)
    ]
    for p in procs:
        p.start()
    try:
        for r, p in zip(ready, procs, strict=True):
            while not r.wait(0.1):
                if not p.is_alive():
                    raise RuntimeError(f"a relay process exited with {p.exitcode}")
        start = time.perf_counter()
        go.set()
        while sum(c.value for c in counts) < n:
            if not all(p.is_alive() for p in procs):
                raise RuntimeError("a relay process died during the drain")
            time.sleep(0.002)
        return n / (time.perf_counter() - start)
    finally:
        stop.set()
        for p in procs:
            p.join(30)


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
                    job = DrainJob(
                        db_url,
                        topic,
                        batch,
                        keep_s,
                        None if label == "raw" else transport.name,
                        None if label == "raw" else transport.config,
                    )
                    best = max(best, _drain([job] * k, messages))
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
