"""Runs one registered consumer: its main flow and, when it retries, its retry flow, each a
thread with its own subscriber of the consumer's group. Where failed messages go is
``msglab.app.places`` (the ``Scheduler`` the retry and dead-letter middleware use).

Main flow: each delivery (or batch) of ``topic`` runs the composed handler; the delivery is
acked when the chain returns (handled, or put on the retry flow, or dead-lettered: each
confirmed by the broker first), nacked for redelivery when it raises.

Retry flow: ``<topic>.retry`` read as the group ``<group>.retry`` (``retry_group``). An
entry of another group is acked and ignored (groups share the retry topic); the group's own
entries wait in a ``DueBuffer`` until due, without blocking later ones, and run with their
attempt; the buffer is looked at after every delivery and every empty poll (at least every
0.2 s). Before the main flow reads
anything, the retry flow has subscribed and the dead-letter place exists (subscribed once by
``DLQ_GROUP``): RabbitMQ routes a message only to queues bound before it was published.

Concurrency (``spec.concurrency`` > 1, per-message handlers): the main flow hands each delivery
to a ``KeyedPool`` (one thread per share of the keys, so a key keeps its order) and settles
in delivery order itself. It is then not closed by ``close_subscribers``: it sees the stop
after its delivery in hand or at its next empty poll, waits for the handlers running, settles
them, then closes.

Broker loss: a flow whose subscriber fails (cannot connect, or gave up reconnecting) logs it
and subscribes again after a backoff (``app.keep_running``), for as long as the
runtime runs; it never gives up. Stop: ``stop`` set, subscribers closed; a flow finishes the
delivery in hand, settles it, and releases what it holds unsettled (it comes again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

from msglab.app.application import ConsumerSpec
from msglab.app.context import Context, Handler
from msglab.app.due import DueBuffer
from msglab.app.keep_running import start_flow
from msglab.app.keyed_pool import KeyedPool
from msglab.app.observer import Observer
from msglab.app.places import Places
from msglab.app.records import RetryEntry, dlq_topic, retry_group, retry_topic
from msglab.message import Batch, Delivery, Message
from msglab.ports import Subscriber, Transport

LOG = logging.getLogger("msglab.app")
DLQ_GROUP = "msglab-dlq"
"""The group that keeps a topic's dead letters for ``msglab dlq`` (subscribed once, at start)."""
RETRIED_KEPT = 10_000
"""Retry entries (message id, attempt) remembered as run, so one delivered again after it ran
(a Kafka rebalance racing the commit of its offset, a Redis Streams claim) is not run twice
by this process; after a crash it may be (at-least-once)."""
RETRY_SETTLE_AGAIN_S = 1.0  # a retry entry whose outcome could not be written runs again after


class ConsumerRunner:
    def __init__(
        self,
        spec: ConsumerSpec,
        handler: Handler,
        transport: Transport,
        observer: Observer,
        stop: threading.Event,
    ) -> None:
        self.spec = spec
        self._handler = handler
        self._transport = transport
        self._observer = observer
        self._stop = stop
        self._where = f"{spec.transport}:{spec.topic} ({spec.group}, {spec.name})"
        self.places = Places(transport, self._where)
        self._subs: set[Subscriber] = set()
        self._subs_lock = threading.Lock()
        self._retry_ready = threading.Event()
        self._retried: OrderedDict[object, None] = OrderedDict()  # entries run lately
        self.consuming = threading.Event()  # the main flow has subscribed (set once)
        self.threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        flows: list[tuple[str, Callable[[], None]]] = [("main", self._main_flow)]
        if self.spec.retries:
            flows.append(("retry", self._retry_flow))
        else:
            self._retry_ready.set()
        for label, flow in flows:
            where, name = f"{self._where} {label} flow", f"{self.spec.name}-{label}"
            self.threads.append(start_flow(flow, self._stop, where, name))

    def close_subscribers(self) -> None:
        """From any thread: every flow stops at its next poll."""
        with self._subs_lock:
            subs = list(self._subs)
        for sub in subs:
            sub.close()

    def close_publisher(self) -> None:
        self.places.close()

    def _subscribed(self, group: str, closed_on_stop: bool = True) -> Subscriber:
        sub = self._transport.subscriber(group)
        if closed_on_stop:
            with self._subs_lock:
                self._subs.add(sub)
        if self._stop.is_set():
            sub.close()
        return sub

    def _forget(self, sub: Subscriber) -> None:
        sub.close()
        with self._subs_lock:
            self._subs.discard(sub)

    # -- the main flow --------------------------------------------------------------------

    def _main_flow(self) -> None:
        while not self._retry_ready.wait(0.2):  # the retry queue is bound first
            if self._stop.is_set():
                return
        prepared = [retry_topic(self.spec.topic)] if self.spec.retries else []
        if self.spec.dead_letters:
            self._declare(dlq_topic(self.spec.topic), DLQ_GROUP)
            prepared.append(dlq_topic(self.spec.topic))
        self.places.warm(prepared)  # so the first retry or dead letter does not pay for it
        threads = 1 if self.spec.batch else self.spec.concurrency
        sub = self._subscribed(self.spec.group, closed_on_stop=threads == 1)
        pool = KeyedPool(threads, self._run_first) if threads > 1 else None
        if pool is not None:
            sub.on_idle(lambda: self._idle_pooled(sub, pool))
        in_order = False
        try:
            items: Iterator[Delivery] | Iterator[Batch]
            if self.spec.batch:
                items = sub.batches(self.spec.topic, self.spec.max_messages)
            else:
                items = sub.subscribe(self.spec.topic)
            LOG.info("%s: consuming (%d handler thread(s))", self._where, threads)
            self.consuming.set()
            for item in items:
                if self._stop.is_set():
                    break  # not handled: released unsettled, it comes again
                if pool is not None and isinstance(item, Delivery):
                    pool.submit(item)
                    continue
                if isinstance(item, Batch):
                    ctx = self._context(list(item.messages), 1, None, item.attempts)
                else:
                    ctx = self._context([item.message], 1, None, [item.attempt])
                if self._run(ctx):
                    item.ack()
                else:
                    item.nack(requeue=True)
            in_order = True
        finally:
            if pool is not None:  # a broker error: what ran comes again, the order kept
                pool.finish(settle=in_order)
            self._forget(sub)

    def _idle_pooled(self, sub: Subscriber, pool: KeyedPool) -> None:
        """An empty poll of a pooled main flow: settle what is done; once stopped, wait for
        the handlers running, settle them and close (the subscription ends after this)."""
        pool.settle_done()
        if self._stop.is_set():
            pool.finish()
            sub.close()

    def _run_first(self, delivery: Delivery) -> bool:
        return self._run(self._context([delivery.message], 1, None, [delivery.attempt]))

    def _declare(self, topic: str, group: str) -> None:
        """Make ``topic`` keep its messages for ``group`` (subscribe once, then close)."""
        sub = self._transport.subscriber(group)
        try:
            sub.subscribe(topic)
        finally:
            sub.close()

    # -- the retry flow -------------------------------------------------------------------

    def _retry_flow(self) -> None:
        sub = self._subscribed(retry_group(self.spec.group))
        buffer = DueBuffer()
        sub.on_idle(lambda: self._run_due(buffer))
        try:
            deliveries = sub.subscribe(retry_topic(self.spec.topic))
            self._retry_ready.set()
            for d in deliveries:
                if self._stop.is_set():
                    break
                entry = RetryEntry.parse(d.message)
                if entry is None:
                    LOG.warning("%s: ignored a malformed retry entry %s", self._where, d.message.id)
                    buffer.skip(d)
                elif entry.failure.group != self.spec.group:
                    buffer.skip(d)  # another group's: it has its own copy
                elif (entry.message.id, entry.failure.attempt) in self._retried:
                    buffer.skip(d)  # run already: delivered again by a rebalance or a claim
                elif buffer.hold(d, entry.due, entry, (entry.message.id, entry.failure.attempt)):
                    LOG.debug(
                        "%s: holding %s for attempt %d",
                        self._where,
                        d.message.id,
                        entry.failure.attempt,
                    )
                else:
                    LOG.debug(
                        "%s: %s for attempt %d is held already",
                        self._where,
                        d.message.id,
                        entry.failure.attempt,
                    )
                self._run_due(buffer)
        finally:
            self._forget(sub)

    def _run_due(self, buffer: DueBuffer) -> None:
        while not self._stop.is_set():
            held = buffer.pop_due(time.time())
            if held is None:
                return
            entry: RetryEntry = held.entry
            ctx = self._context([entry.message], entry.failure.attempt, entry.failure.first_failure)
            if self._run(ctx):
                buffer.done(held)
                self._retried[held.key] = None
                if len(self._retried) > RETRIED_KEPT:
                    self._retried.popitem(last=False)
            else:
                buffer.again(held, time.time() + RETRY_SETTLE_AGAIN_S)

    # -- running the handler --------------------------------------------------------------

    def _context(
        self,
        messages: Sequence[Message],
        attempt: int,
        first_failure: float | None,
        deliveries: Sequence[int] = (),
    ) -> Context:
        s = self.spec
        return Context(
            messages=messages,
            topic=s.topic,
            group=s.group,
            handler=s.name,
            attempt=attempt,
            deliveries=deliveries,
            first_failure=first_failure,
            decode=s.decode,
            observer=self._observer,
            emit=self.places.emit,
            scheduler=self.places,
        )

    def _run(self, ctx: Context) -> bool:
        """Whether the chain settled the messages (handled, retried or dead-lettered)."""
        try:
            self._handler(ctx)
            return True
        except Exception as exc:
            LOG.warning(
                "%s: attempt %d of %d message(s) not settled: %s: %s",
                self._where,
                ctx.attempt,
                len(ctx.messages),
                type(exc).__name__,
                exc,
            )
            return False
