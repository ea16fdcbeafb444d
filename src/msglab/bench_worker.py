"""``msglab bench consume --worker``: the same drain run by the App runtime (what ``msglab
worker`` runs), beside the bare ``batches`` loop.

Each drain is one ``Runtime`` with one handler that reads every message, wrapped in the
default middleware (dead letters after ``Retry()``) and the metrics middleware reporting to a
Prometheus registry of its own (not served). Forms:

* ``msglab worker``: a batch handler (``batch=True``, the transport's prefetch per batch).
* ``msglab worker per message``: a handler per message.
* ``msglab worker effectively-once``: the batch handler behind the idempotent middleware, one
  PostgreSQL transaction per batch claiming a dedup row per message (``--db``).

The clock runs from the first message the handler sees to the last; the runtime is started,
and has subscribed its retry flow and dead-letter place, before the clock can start.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from msglab.app import App, Context, DeadLetter, Retry, Runtime
from msglab.app.context import Middleware
from msglab.app.records import dlq_topic, retry_group, retry_topic
from msglab.app.runner import DLQ_GROUP
from msglab.ports import TopicAdmin, Transport

WORKER = "msglab worker"
WORKER_PER_MESSAGE = "msglab worker per message"
WORKER_ONCE = "msglab worker effectively-once"
START_TIMEOUT_S = 60.0


def rss_mb() -> float:
    """This process's resident memory, in MB (Linux: /proc/self/statm)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


class _Count:
    """What the handler saw: how many messages, when the first and the last; the process's
    RSS when a tenth had come and when all had (a consumer's memory must stay flat)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.got = 0
        self.first = 0.0
        self.last = 0.0
        self.done = threading.Event()
        self.rss_at_tenth = 0.0
        self.rss_at_end = 0.0

    def __call__(self, ctx: Context) -> None:
        n = 0
        for _message in ctx.messages:  # read (decode) each, as the bare loop does
            n += 1
        now = time.perf_counter()
        if not self.first:
            self.first = now
        self.last = now
        before, self.got = self.got, self.got + n
        if before < self.target // 10 <= self.got:
            self.rss_at_tenth = rss_mb()
        if self.got >= self.target:
            self.rss_at_end = rss_mb()
            self.done.set()


class WorkerDrain:
    """A drain through the runtime on transport ``name``: ``batch`` handler or per message;
    ``extra(group)``: more middleware inside the default ones (the idempotent consumer of that
    group). ``rss``: the process's RSS in MB when a tenth and when all of the last drain's
    messages had come."""

    def __init__(
        self, name: str, batch: bool, extra: Callable[[str], list[Middleware]] | None = None
    ) -> None:
        self.name = name
        self.batch = batch
        self.extra = extra
        self.rss = (0.0, 0.0)

    def __call__(
        self,
        transport: Transport,
        topic: str,
        group: str,
        count: int,
        idle_s: float,
        ready: threading.Event,
    ) -> tuple[int, float]:
        from msglab.metrics.exporter import Metrics
        from msglab.metrics.observer import MetricsObserver

        seen = _Count(count)
        extra = self.extra(group) if self.extra else []
        app = App("bench", middleware=[DeadLetter(), Retry(), *extra])
        app.add(
            seen,
            topic,
            transport=self.name,
            group=group,
            profile=transport.config.profile.value,
            batch=self.batch,
            max_messages=max(1, transport.config.prefetch),
            name="drain",
        )
        metrics = Metrics()
        runtime = Runtime(
            app,
            lambda _name, _profile: transport,
            observer_for=lambda spec: MetricsObserver(metrics, spec.transport),
        )
        runtime.start()
        try:
            if not runtime.wait_consuming(START_TIMEOUT_S):
                raise TimeoutError(f"the runtime did not subscribe within {START_TIMEOUT_S:.0f}s")
            ready.set()
            last_got, last_change = -1, time.monotonic()
            while not seen.done.wait(0.1):  # give up after idle_s without progress
                if seen.got != last_got:
                    last_got, last_change = seen.got, time.monotonic()
                elif time.monotonic() - last_change > idle_s:
                    break
        finally:
            runtime.stop(10)
        self.rss = (seen.rss_at_tenth, seen.rss_at_end)
        return seen.got, seen.last - seen.first


def clean_worker_topics(transport: Transport, topic: str, groups: list[str]) -> None:
    """Delete what the runtime's drains made beside the topic: its retry topic and its
    dead-letter place."""
    if isinstance(transport, TopicAdmin):
        transport.delete_topic(retry_topic(topic), [retry_group(g) for g in groups])
        transport.delete_topic(dlq_topic(topic), [DLQ_GROUP])


def worker_drains(name: str, db_url: str | None) -> dict[str, WorkerDrain]:
    """The runtime's forms to bench on transport ``name``; effectively-once with ``db_url``
    (its dedup table made if missing; each drain's group is new, so nothing is skipped)."""
    drains = {WORKER: WorkerDrain(name, True), WORKER_PER_MESSAGE: WorkerDrain(name, False)}
    if db_url is not None:
        from msglab.app.middleware.idempotent import idempotent
        from msglab.consumers.idempotent import IdempotentConsumer
        from msglab.db import engine

        db = engine(db_url)
        IdempotentConsumer(db, "bench").create_table()
        drains[WORKER_ONCE] = WorkerDrain(
            name, True, lambda group: [idempotent(IdempotentConsumer(db, group))]
        )
    return drains
