"""Where a consumer's messages go besides its handler: what handlers emit
(``Context.publish``), the retry flow (``<topic>.retry``) and the dead letters
(``<topic>.dlq``), through one publisher of the consumer's transport; the ``Scheduler`` the
retry and dead-letter middleware use.

Each write returns once the broker confirmed it. A publisher that failed is closed and a new
one made for the next write (a broker restarted meanwhile). A retry or dead-letter write that
fails raises ``FlowError``: the delivery is then not acked and comes again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from msglab.app.context import Context
from msglab.app.records import Failure, FlowError, dlq_topic, error_fields, failures, retry_topic
from msglab.errors import MsglabError
from msglab.message import Message
from msglab.ports import Publisher, Transport

LOG = logging.getLogger("msglab.app")


class Places:
    """Thread-safe: the consumer's flows, its handler threads and the event loop of async
    handlers share it. One write at a time (a pika channel belongs to one thread at a time)."""

    def __init__(self, transport: Transport, where: str) -> None:
        self._transport = transport
        self._where = where
        self._publisher: Publisher | None = None
        self._lock = threading.Lock()

    def emit(self, topic: str, messages: Sequence[Message]) -> None:
        with self._lock:
            if self._publisher is None:
                self._publisher = self._transport.publisher()
            publisher = self._publisher
            try:
                publisher.publish(topic, messages)
            except MsglabError:
                self._publisher = None  # a fresh connection next time
                publisher.close()
                raise

    def warm(self, topics: Sequence[str]) -> None:
        """Make the publisher and let it learn ``topics`` now (an empty publish to each), so
        that the first retry or dead letter does not hold the main flow: measured on Kafka,
        110 ms for a topic's first publish, 3 ms after. A failure is left to the first write."""
        for topic in topics:
            try:
                self.emit(topic, [])
            except MsglabError as exc:
                LOG.debug("%s: could not prepare %s: %s", self._where, topic, exc)

    def close(self) -> None:
        with self._lock:
            if self._publisher is not None:
                self._publisher.close()
                self._publisher = None

    def retry_later(self, ctx: Context, delay_s: float, error: BaseException) -> None:
        failure = _failure(ctx, error, ctx.attempt + 1)
        entries = failures(ctx.messages, failure, due=failure.last_failure + delay_s)
        self._write(retry_topic(ctx.topic), entries)

    def dead_letter(self, ctx: Context, error: BaseException) -> None:
        failure = _failure(ctx, error, ctx.attempt)
        self._write(dlq_topic(ctx.topic), failures(ctx.messages, failure))
        LOG.warning(
            "%s: %d message(s) dead-lettered to %s after %d attempt(s): %s",
            self._where,
            len(ctx.messages),
            dlq_topic(ctx.topic),
            ctx.attempt,
            type(error).__name__,
        )

    def _write(self, topic: str, messages: list[Message]) -> None:
        try:
            self.emit(topic, messages)
        except MsglabError as exc:
            raise FlowError(f"{topic}: {exc}") from exc


def _failure(ctx: Context, error: BaseException, attempt: int) -> Failure:
    now = time.time()
    kind, text = error_fields(error)
    first = ctx.first_failure if ctx.first_failure is not None else now
    return Failure(ctx.topic, ctx.group, ctx.handler, attempt, first, now, kind, text)
