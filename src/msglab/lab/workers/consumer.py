"""The consumer of a lab run: an ``App`` run by the ``Runtime``, as ``msglab worker`` runs a
user's, so what the lab measures is what users run.

One batch handler on the run's topic (the transport's fetch, at most ``EFFECT_BATCH``
messages): it records each delivery, applies the effect (a row in PostgreSQL; under
effectively-once through the idempotent consumer), answers it (request-reply) and returns, and
the runtime acks. Evidence before effect before ack, so a killed worker leaves everything the
checker needs. A handler that raises (the database unreachable after its retries) is nacked and
its batch comes again.

consumer-kill: SIGKILL self after ``die_after_effects`` effects, before their ack. SIGTERM: the
runtime's graceful stop (the batch in hand finishes and is acked, nothing more is fetched).
Under exactly-once (Kafka) the consumer is a pipeline instead: each batch copied to
``<topic>-out`` in one Kafka transaction with its offsets (``Pipeline``); a read_committed
reader of ``<topic>-out`` records what is delivered (``workers.reader.read_output``).
The poison workload: the messages of ``spec.poison`` always fail; the handler raises a
``BatchFailure`` for them after handling the rest, and the runtime's ``Retry`` then
``DeadLetter`` take them to ``<topic>.dlq`` with the reason.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from msglab.app import (
    App,
    BatchFailure,
    Context,
    DeadLetter,
    Handler,
    Middleware,
    Retry,
    Runtime,
)
from msglab.brokers import open_transport
from msglab.consumers.idempotent import IdempotentConsumer
from msglab.db import engine
from msglab.lab import effects
from msglab.lab.evidence import DELIVERIES, Ledger, delivery_lines
from msglab.lab.workers.spec import (
    GROUP,
    POISON_ATTEMPTS,
    WorkerSpec,
    die,
    output_topic_of,
    ready,
    reply_topic_of,
    topic_of,
)
from msglab.message import Message
from msglab.ports import Transport
from msglab.profiles import DeliveryProfile

EFFECT_BATCH = 100  # messages per batch at most, one effect transaction (prefetch: 200)
GRACE_S = 10.0  # a SIGTERM lets the batch in hand finish within this
SUBSCRIBE_TIMEOUT_S = 60.0
POISON_RETRY = Retry(attempts=POISON_ATTEMPTS, first_s=0.5, max_s=2.0, jitter=0.2)


class Poisoned(Exception):
    """The lab's poison message: its handler always fails."""


def consume(spec: WorkerSpec) -> None:
    logging.basicConfig(
        level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if DeliveryProfile.parse(spec.profile) is DeliveryProfile.EXACTLY_ONCE:
        # a pipeline: its copies on <topic>-out are what is delivered (workers.reader)
        _run(spec, lab_app(spec, Pipeline(spec)))
        return
    ledger = Ledger(Path(spec.run_dir), DELIVERIES, spec.name)
    _run(spec, lab_app(spec, LabHandler(spec, ledger)))
    ledger.close()


def _run(spec: WorkerSpec, app: App) -> None:
    """Run ``app`` until SIGTERM (the runtime's graceful stop). Its exactly-once consumers'
    transactional identity is the worker's slot (``c0`` for ``c0`` and its replacement
    ``c0-r``): the replacement fences the dead worker and aborts its open transaction at
    once, instead of readers waiting out the transaction's timeout."""
    slot = spec.name.split("-")[0]
    runtime = Runtime(app, _connect(spec), instance=slot)
    signal.signal(signal.SIGTERM, lambda *_: runtime.request_stop())
    runtime.start()
    if not runtime.wait_consuming(SUBSCRIBE_TIMEOUT_S):
        raise TimeoutError(f"{spec.name}: not subscribed within {SUBSCRIBE_TIMEOUT_S:.0f}s")
    ready(spec)
    while not runtime.wait(0.5):
        pass
    runtime.stop(GRACE_S)


class Pipeline:
    """Copies each message (same id, key, headers and payload) to ``<topic>-out`` inside the
    batch's transaction. consumer-kill: SIGKILL self once ``die_after_effects`` messages were
    copied, inside the open transaction (its copies are never committed)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self._spec = spec
        self._out = output_topic_of(spec.run_id)
        self._copied = 0

    def __call__(self, ctx: Context) -> None:
        messages = list(ctx.messages)
        kill_at = self._spec.die_after_effects
        if kill_at and self._copied + len(messages) >= kill_at:
            messages = messages[: kill_at - self._copied]
        assert ctx.emit is not None  # run by the runtime
        ctx.emit(self._out, messages)
        self._copied += len(messages)
        if kill_at and self._copied >= kill_at:
            die(self._spec, "consumer-kill", f"after copy {self._copied}, before the commit")


def _connect(spec: WorkerSpec) -> Any:
    def connect(name: str, profile: DeliveryProfile) -> Transport:
        return open_transport(name, spec.config())  # the run's client settings (--set)

    return connect


def lab_app(spec: WorkerSpec, handler: Handler) -> App:
    """The lab consumer's App: one batch handler on the run's topic. No middleware (a failed
    batch is nacked for the broker to redeliver; under exactly-once its transaction aborts and
    it comes again), but under the poison workload dead letters after three attempts."""
    middleware: list[Middleware] = [DeadLetter(), POISON_RETRY] if spec.poison else []
    app = App(f"lab-{spec.name}", middleware=middleware)
    app.add(
        handler,
        topic_of(spec.run_id),
        transport=spec.transport,
        group=GROUP,
        profile=spec.profile,
        batch=True,
        max_messages=EFFECT_BATCH,
        name="copy" if isinstance(handler, Pipeline) else "effects",
    )
    return app


class LabHandler:
    """Handles a batch as a batch consumer does: a delivery line per message, flushed; the
    effects in one committed transaction; the replies (request-reply); then returns (the
    runtime acks). Under consumer-kill only the messages up to the kill point are handled
    (the rest is never handed on: not recorded, no effect), then the process dies."""

    def __init__(self, spec: WorkerSpec, ledger: Ledger) -> None:
        self._spec = spec
        self._ledger = ledger
        self._db = engine(spec.db_url)
        self._dedup = None
        if spec.profile == "effectively-once":
            self._dedup = IdempotentConsumer(self._db, f"{GROUP}-{spec.run_id}", effects.RETRY)
        self._applied = 0
        self._kill_at = spec.die_after_effects  # consumer-kill: after exactly this many effects
        self._poison = frozenset(spec.poison)
        self._decode: Any = None
        if spec.pattern == "table-cdc":  # records are lab_orders changes: the row's message id
            from msglab.cdc.table import decode_change  # the cdc extra: only for table-cdc

            self._decode = lambda m: decode_change(m, "message_id")

    def __call__(self, ctx: Context) -> None:
        messages = list(ctx.messages)
        if self._decode is not None:  # no tombstones: the table connector writes none
            messages = [d for d in map(self._decode, messages) if d is not None]
        if self._kill_at and self._applied + len(messages) >= self._kill_at:
            messages = messages[: self._kill_at - self._applied]
        attempts = list(ctx.deliveries) or [ctx.attempt] * len(messages)
        self._ledger.write_lines(delivery_lines(self._spec.name, self._records(messages, attempts)))
        poisoned = [m for m in messages if m.id in self._poison]
        good = [m for m in messages if m.id not in self._poison] if poisoned else messages
        effects.apply(self._db, self._spec.run_id, self._spec.name, good, self._dedup)
        if self._spec.replies:  # request-reply: answered after the effect, before the ack
            assert ctx.emit is not None  # run by the runtime
            ctx.emit(
                reply_topic_of(self._spec.run_id), [Message(b"", m.key, id=m.id) for m in good]
            )
        self._applied += len(messages)
        if self._kill_at and self._applied >= self._kill_at:
            die(self._spec, "consumer-kill", f"after effect {self._applied}, before its ack")
        if poisoned:
            raise BatchFailure(poisoned, Poisoned(f"poison message {poisoned[0].id}"))

    def _records(
        self, messages: list[Message], attempts: list[int]
    ) -> list[tuple[float, str, int, str | None]]:
        """(time, id, attempt, key) per message; under slow-consumer each takes ``slow_ms``."""
        records = []
        now = time.time()
        for m, attempt in zip(messages, attempts, strict=False):
            if self._spec.slow_ms:
                time.sleep(self._spec.slow_ms / 1000)
                now = time.time()
            records.append((now, m.id, attempt, m.key))
        return records
