"""Runs an ``exactly-once`` consumer: each fetched batch of its topic is handled inside one
transaction of the transport's ``TransactionalSubscriber`` (Kafka only), which commits what
the handler published together with the batch's consumed offsets.

Per batch: ``begin``; the handler runs (a per-message handler once per message, in broker
order; a batch handler once), and what it emits with ``ctx.publish`` goes into the
transaction (queued, confirmed by the commit, so ``ctx.publish`` returns before the broker
confirmed); then ``commit(batch)``. Readers with ``read_committed`` see every output of the
batch and the group resumes after it, or neither happened. When the handler raises for any
message, the transaction is aborted: every output of the batch is discarded, the consumer is
rewound and the batch comes again, each message's attempt counted up (in this process: a
restarted worker counts from 1 again).

The retry and dead-letter middleware keep their decisions but act in place, because a retry
entry written to ``<topic>.retry`` and handled later, outside the transaction, would no
longer be exactly once (``_InPlace``, the ``Scheduler`` of these contexts):

* ``Retry`` retrying: the transaction aborts, the flow waits the retry's delay, and the batch
  is read again. This holds up the consumer's partitions meanwhile (Kafka's order per
  partition is kept; the at-least-once runtime's non-blocking retry flow is not available).
* ``DeadLetter`` (after the last attempt, or a ``NonRetryable`` error): the message is written
  to ``<topic>.dlq`` *inside* the transaction, so it is dead-lettered exactly once, with the
  batch's other outputs and offsets. ``msglab dlq`` reads ``<topic>.dlq`` read_committed
  (librdkafka's default), so a dead letter of an aborted transaction is never listed.

Errors of the transport: ``TransactionAborted`` (an abortable error at commit) is logged and
the batch comes again; ``FencedError`` (a newer instance with the same transactional identity
runs) stops this consumer for good: starting again would fence the newer one in turn; any
other ``MsglabError`` closes the subscriber and builds a new one after a backoff, as the
at-least-once flows do (its producer settles the open transaction, its consumer resumes from
the committed offsets).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from msglab.app.application import ConsumerSpec
from msglab.app.context import Context, Handler
from msglab.app.keep_running import start_flow
from msglab.app.observer import Observer
from msglab.app.records import Failure, FlowError, dlq_topic, error_fields, failures
from msglab.config import check_name
from msglab.errors import FencedError, MsglabError, TransactionAborted, UsageError
from msglab.message import Batch, Message
from msglab.ports import TransactionalSubscriber, TransactionalTransport, Transport
from msglab.profiles import EXACTLY_ONCE_REASON

LOG = logging.getLogger("msglab.app")
FIRST_FAILURES_KEPT = 10_000  # message ids whose first failure time is remembered


class RetryInPlace(FlowError):
    """Raised by ``_InPlace.retry_later``: the batch's transaction is to be aborted and the
    batch read again after ``delay_s``. A FlowError, so ``DeadLetter`` lets it through."""

    def __init__(self, delay_s: float, error: BaseException) -> None:
        super().__init__(f"retried in place after {delay_s:.3g}s: {type(error).__name__}")
        self.delay_s = delay_s


class _InPlace:
    """The ``Scheduler`` of a context in a transaction: ``retry_later`` raises
    ``RetryInPlace``; ``dead_letter`` writes the dead letters into the transaction."""

    def __init__(
        self, sub: TransactionalSubscriber, first_failure: dict[str, float], where: str
    ) -> None:
        self._sub = sub
        self._first_failure = first_failure
        self._where = where

    def retry_later(self, ctx: Context, delay_s: float, error: BaseException) -> None:
        raise RetryInPlace(delay_s, error)

    def dead_letter(self, ctx: Context, error: BaseException) -> None:
        now = time.time()
        kind, text = error_fields(error)
        first = min((self._first_failure.get(m.id, now) for m in ctx.messages), default=now)
        failure = Failure(ctx.topic, ctx.group, ctx.handler, ctx.attempt, first, now, kind, text)
        try:
            self._sub.publish(dlq_topic(ctx.topic), failures(ctx.messages, failure))
        except MsglabError as exc:
            raise FlowError(f"{dlq_topic(ctx.topic)}: {exc}") from exc
        LOG.warning(
            "%s: %d message(s) dead-lettered to %s in the transaction after %d attempt(s)",
            self._where,
            len(ctx.messages),
            dlq_topic(ctx.topic),
            ctx.attempt,
        )


class TransactionalRunner:
    """The ``ConsumerRunner`` of an exactly-once consumer (same lifecycle: ``start``,
    ``close_subscribers``, ``close_publisher``, ``consuming``, ``threads``): one flow thread
    with one ``TransactionalSubscriber`` of ``spec.group``, identified by ``instance``
    (``msglab worker --instance``: the same after a restart, another for each replica running
    at once). UsageError when the transport has no transactions or ``instance`` is not a
    valid name (both at ``Runtime.start``, before anything runs)."""

    def __init__(
        self,
        spec: ConsumerSpec,
        handler: Handler,
        transport: Transport,
        observer: Observer,
        stop: threading.Event,
        instance: str = "0",
    ) -> None:
        if not isinstance(transport, TransactionalTransport):
            raise UsageError(
                f"{spec.name}: {spec.transport} cannot promise exactly-once: {EXACTLY_ONCE_REASON}"
            )
        self._instance = check_name("instance", instance)
        self.spec = spec
        self._handler = handler
        self._transport = transport
        self._observer = observer
        self._stop = stop
        self._where = f"{spec.transport}:{spec.topic} ({spec.group}, {spec.name}, exactly-once)"
        self._sub: TransactionalSubscriber | None = None
        self._sub_lock = threading.Lock()
        self._first_failure: dict[str, float] = {}
        self.consuming = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        name = f"{self.spec.name}-eos"
        self.threads.append(start_flow(self._flow, self._stop, self._where, name, (FencedError,)))

    def close_subscribers(self) -> None:
        """From any thread: the flow ends after the batch in hand (committed or aborted)."""
        with self._sub_lock:
            sub = self._sub
        if sub is not None:
            sub.close()

    def close_publisher(self) -> None:
        """Nothing to do: the transactional producer closes with its subscriber."""

    def _flow(self) -> None:
        sub = self._transport.transactional(self.spec.group, self._instance)
        with self._sub_lock:
            self._sub = sub
        if self._stop.is_set():
            sub.close()
        try:
            batches = sub.batches(self.spec.topic, self.spec.max_messages)
            LOG.info("%s: consuming (instance %s)", self._where, self._instance)
            self.consuming.set()
            for batch in batches:
                if self._stop.is_set():
                    break  # no transaction begun: the batch comes again
                self._handle(sub, batch)
        finally:
            with self._sub_lock:
                self._sub = None
            sub.close()

    def _handle(self, sub: TransactionalSubscriber, batch: Batch) -> None:
        """One batch in one transaction: committed when every message was handled (or
        dead-lettered), else aborted and rewound, after the retry's delay if one asked."""
        sub.begin()
        scheduler = _InPlace(sub, self._first_failure, self._where)
        messages = list(batch.messages)
        if self.spec.batch:
            runs = [(messages, max(batch.attempts))]
        else:
            runs = [([m], a) for m, a in zip(messages, batch.attempts, strict=True)]
        delay_s: float | None = 0.0
        for run, attempt in runs:
            delay_s = self._run(self._context(run, attempt, sub, scheduler))
            if delay_s is not None:
                break
        if delay_s is not None:
            sub.abort(batch)
            LOG.info("%s: %d message(s) aborted; again in %.3gs", self._where, len(batch), delay_s)
            self._stop.wait(delay_s)
            return
        try:
            sub.commit(batch)
        except TransactionAborted as exc:
            LOG.warning("%s: %s", self._where, exc)
            return
        for m in messages:
            self._first_failure.pop(m.id, None)

    def _context(
        self,
        messages: Sequence[Message],
        attempt: int,
        sub: TransactionalSubscriber,
        scheduler: _InPlace,
    ) -> Context:
        s = self.spec
        first = [self._first_failure[m.id] for m in messages if m.id in self._first_failure]
        return Context(
            messages=messages,
            topic=s.topic,
            group=s.group,
            handler=s.name,
            attempt=attempt,
            first_failure=min(first) if first else None,
            decode=s.decode,
            observer=self._observer,
            emit=sub.publish,
            scheduler=scheduler,
        )

    def _run(self, ctx: Context) -> float | None:
        """None when the chain handled the messages (or dead-lettered them), else the seconds
        to wait before the batch is read again (0: at once)."""
        try:
            self._handler(ctx)
            return None
        except Exception as exc:
            now = time.time()
            for m in ctx.messages:
                self._first_failure.setdefault(m.id, now)
            while len(self._first_failure) > FIRST_FAILURES_KEPT:
                self._first_failure.pop(next(iter(self._first_failure)))
            delay = exc.delay_s if isinstance(exc, RetryInPlace) else 0.0
            LOG.warning(
                "%s: attempt %d of %d message(s) failed, the transaction aborts: %s: %s",
                self._where,
                ctx.attempt,
                len(ctx.messages),
                type(exc).__name__,
                exc,
            )
            return delay
