"""The consumer of a lab run: records each delivery, applies the effect (a row in PostgreSQL;
under effectively-once through the idempotent consumer), answers it (request-reply), then
acks. Evidence before effect before ack, so a killed worker leaves everything the checker
needs. consumer-kill: SIGKILL self after ``die_after_effects`` effects, before their ack."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from msglab.brokers import open_transport
from msglab.consumers.idempotent import IdempotentConsumer
from msglab.lab import effects
from msglab.lab.evidence import DELIVERIES, Ledger, delivery_lines
from msglab.lab.workers.spec import GROUP, WorkerSpec, die, ready, reply_topic_of, topic_of
from msglab.message import Delivery, Message
from msglab.ports import Publisher
from msglab.subscription import BATCH_WAIT_S

EFFECT_BATCH = 100  # messages per batch at most, one effect transaction (prefetch: 200)


def consume(spec: WorkerSpec) -> None:
    deliveries = Ledger(Path(spec.run_dir), DELIVERIES, spec.name)
    db = effects.engine(spec.db_url)
    transport = open_transport(spec.transport, spec.config())
    sub = transport.subscriber(GROUP)
    signal.signal(signal.SIGTERM, lambda *_: sub.close())  # graceful: ends the iteration
    replier = transport.publisher() if spec.replies else None
    dedup = None
    if spec.profile == "effectively-once":
        dedup = IdempotentConsumer(db, f"{GROUP}-{spec.run_id}", effects.RETRY)
    handler = _BatchHandler(spec, deliveries, db, dedup, replier)
    topic = topic_of(spec.run_id)
    if getattr(sub, "fetches_batches", False):  # one fetch is one batch, handed out at once
        batches = sub.batches(topic, EFFECT_BATCH)
        ready(spec)
        for batch in batches:
            handler.handle(list(batch.messages), batch.attempts, None, batch.ack)
    else:  # the broker pushes one at a time: each is on record as it arrives
        grouped = _Grouped(handler)
        sub.on_idle(grouped.flush)
        stream = sub.subscribe(topic)
        ready(spec)
        for d in stream:
            grouped.add(d)
    if replier is not None:
        replier.close()
    deliveries.close()


class _BatchHandler:
    """Handles messages together, as a batch consumer does: a delivery line per message,
    flushed; the effects in one committed transaction; the replies (request-reply); then the
    ack. Evidence before effect before ack. A batch the subscription closes on is neither
    applied nor acked: it comes again. A batch is what the subscriber fetched at once
    (``Subscriber.batches`` where the broker fetches in batches), or single deliveries grouped
    by ``_Grouped`` where the broker pushes them one at a time."""

    def __init__(
        self,
        spec: WorkerSpec,
        deliveries: Ledger,
        db: Any,
        dedup: IdempotentConsumer | None,
        replier: Publisher | None,
    ) -> None:
        self._spec = spec
        self._replier = replier
        self._ledger = deliveries
        self._db = db
        self._dedup = dedup
        self._applied = 0
        self._kill_at = spec.die_after_effects  # consumer-kill: after exactly this many effects
        self.slow_ms = spec.slow_ms

    def kill_due(self, more: int) -> bool:
        """True when ``more`` messages would reach the consumer-kill point."""
        return bool(self._kill_at) and self._applied + more >= self._kill_at

    def handle(
        self,
        messages: list[Message],
        attempts: list[int],
        arrived: list[float] | None,
        ack: Callable[[], None],
    ) -> None:
        """``arrived``: each message's arrival time (None: they arrived together, now)."""
        if self.kill_due(len(messages)):
            # consumer-kill: the handler gets as far as the kill_at-th message; the rest is
            # never handed to it (not recorded, no effect), as in a consumer that handles a
            # batch one message after another and dies there
            messages = messages[: self._kill_at - self._applied]
        records = []
        now = time.time()
        for i, (m, attempt) in enumerate(zip(messages, attempts, strict=False)):
            if arrived is not None:
                now = arrived[i]
            elif self._spec.slow_ms:  # slow-consumer: each message takes slow_ms
                time.sleep(self._spec.slow_ms / 1000)
                now = time.time()
            records.append((now, m.id, attempt, m.key))
        # on record before their effects
        self._ledger.write_lines(delivery_lines(self._spec.name, records))
        effects.apply(self._db, self._spec.run_id, self._spec.name, messages, self._dedup)
        if self._replier is not None:  # request-reply: answered after the effect, before the ack
            self._replier.publish(
                reply_topic_of(self._spec.run_id),
                [Message(b"", m.key, id=m.id) for m in messages],
            )
        self._applied += len(messages)
        if self._kill_at and self._applied >= self._kill_at:
            die(self._spec, "consumer-kill", f"after effect {self._applied}, before its ack")
        ack()


class _Grouped:
    """Pushed deliveries grouped for ``_BatchHandler``: each is timed as it arrives (and takes
    ``slow_ms`` there under slow-consumer); a group is handled once it holds EFFECT_BATCH, once
    BATCH_WAIT_S passed since its first, once the kill point is reached, or when the stream
    goes idle (``flush``, the subscriber's on_idle hook). Each delivery is acked after."""

    def __init__(self, handler: _BatchHandler) -> None:
        self._handler = handler
        self._held: list[Delivery] = []
        self._arrived: list[float] = []

    def add(self, d: Delivery) -> None:
        if self._handler.slow_ms:
            time.sleep(self._handler.slow_ms / 1000)
        self._held.append(d)
        self._arrived.append(time.time())
        if (
            len(self._held) >= EFFECT_BATCH
            or self._arrived[-1] - self._arrived[0] >= BATCH_WAIT_S
            or self._handler.kill_due(len(self._held))
        ):
            self.flush()

    def flush(self) -> None:
        if not self._held:
            return
        held, arrived = self._held, self._arrived
        self._held, self._arrived = [], []

        def ack_each() -> None:
            for d in held:
                d.ack()

        self._handler.handle(
            [d.message for d in held], [d.attempt for d in held], arrived, ack_each
        )
