"""What a handler is given (``Context``), what it is (``Handler``), what wraps it
(``Middleware``), and the errors that steer a failure.

A handler is called with one ``Context`` holding one message (``@app.consumer``) or the
messages fetched together (``batch=True``). Returning means every message of it is handled
(the runtime acks); raising means none is: the retry and dead-letter middleware decide what
happens next, and without them the delivery is nacked for the broker to deliver again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from msglab.app.observer import NO_OBSERVER, Observer
from msglab.message import Message

CORRELATION_HEADER = "correlation-id"
CAUSATION_HEADER = "causation-id"


class NonRetryable(Exception):
    """Raise (or subclass) to say a message can never succeed: the retry middleware sends it
    to the dead-letter place at once."""


class DecodeError(NonRetryable):
    """The payload could not be decoded by the consumer's ``decode`` (the cause is chained)."""


class BatchFailure(Exception):
    """Raised by a batch handler that handled its batch except ``messages``, which failed with
    ``error``: the retry and dead-letter middleware take only those, the others are acked
    with the batch (and the idempotent middleware commits their effects, not the failed
    ones' claims). ``failed(ctx, exc)`` reads any error this way."""

    def __init__(self, messages: Sequence[Message], error: BaseException) -> None:
        super().__init__(
            f"{len(messages)} message(s) of the batch failed: {type(error).__name__}: {error}"
        )
        self.messages = list(messages)
        self.error = error


def failed(ctx: Context, error: BaseException) -> tuple[Context, BaseException]:
    """The context of the messages that failed with ``error`` and the error itself: for a
    ``BatchFailure``, its messages and its ``error``; else every message and ``error``."""
    if isinstance(error, BatchFailure):
        return ctx.with_messages(error.messages), error.error
    return ctx, error


class HandlerTimeout(Exception):
    """The handler ran longer than its ``timeout`` middleware allows (retryable)."""


class Emit(Protocol):
    """Publishes messages a handler emits (the runtime's publisher of the handler's transport)."""

    def __call__(self, topic: str, messages: Sequence[Message]) -> None: ...


class Scheduler(Protocol):
    """What the runtime offers the retry and dead-letter middleware for the messages of one
    context: ``retry_later`` puts them on the retry flow due in ``delay_s`` (their next
    attempt is ``ctx.attempt + 1``); ``dead_letter`` puts them in the dead-letter place. Both
    return once the broker confirmed, else raise (the delivery is then not acked)."""

    def retry_later(self, ctx: Context, delay_s: float, error: BaseException) -> None: ...

    def dead_letter(self, ctx: Context, error: BaseException) -> None: ...


@dataclass
class Context:
    """One call of a handler.

    ``messages``: one message, or a batch's in broker order. ``topic``: the topic the messages
    were published to (also when they come back from the retry flow). ``attempt``: 1 for the
    first run, n for the n-th (counted in the retry entry's headers, so it survives a crash).
    ``deliveries``: each message's delivery count as the broker tells it (``Delivery.attempt``:
    above 1 for a redelivery), empty on the retry flow. ``first_failure``: epoch seconds of
    the first failed attempt, None on the first run.
    ``correlation_id``: set by the correlation middleware, copied into what ``publish`` emits.
    ``db``: the database connection the idempotent middleware opened (the effect's
    transaction). ``deadline``: ``time.monotonic()`` after which the timeout middleware gives
    up; async handlers are cancelled then.
    """

    messages: Sequence[Message]
    topic: str
    group: str
    handler: str
    attempt: int = 1
    deliveries: Sequence[int] = ()
    first_failure: float | None = None
    correlation_id: str | None = None
    db: Any = None
    deadline: float | None = None
    decode: Callable[[bytes], Any] | None = None
    observer: Observer = NO_OBSERVER
    emit: Emit | None = field(default=None, repr=False)
    scheduler: Scheduler | None = field(default=None, repr=False)

    @property
    def message(self) -> Message:
        """The message of a single-message handler (the first of a batch)."""
        return self.messages[0]

    @property
    def headers(self) -> Mapping[str, str]:
        return self.message.headers

    @property
    def value(self) -> Any:
        """The message's payload through the consumer's ``decode`` (the bytes without one);
        DecodeError if it cannot be decoded (dead-lettered at once, never retried)."""
        return decode_payload(self.message.payload, self.decode)

    def values(self) -> list[Any]:
        """Every message's payload decoded, as ``value``."""
        return [decode_payload(m.payload, self.decode) for m in self.messages]

    def with_messages(self, messages: Sequence[Message]) -> Context:
        """This context for ``messages`` (some of its own), their delivery counts kept."""
        counts = dict(zip((m.id for m in self.messages), self.deliveries, strict=False))
        kept = [counts[m.id] for m in messages if m.id in counts]
        return replace(
            self, messages=list(messages), deliveries=kept if len(kept) == len(messages) else ()
        )

    def remaining_s(self) -> float | None:
        """Seconds left before ``deadline`` (None: no deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def publish(
        self,
        topic: str,
        payload: bytes,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Emit one message on the handler's transport, with ``correlation-id`` (when the
        correlation middleware set one) and ``causation-id`` (this message's id) added; the
        message sent, once confirmed. It blocks until then: in an ``async def`` handler it
        holds the runtime's event loop (shared by every async handler) meanwhile."""
        if self.emit is None:
            raise RuntimeError("this context has no publisher (not run by an App runtime)")
        extra = dict(headers or {})
        if self.correlation_id is not None:
            extra.setdefault(CORRELATION_HEADER, self.correlation_id)
        extra.setdefault(CAUSATION_HEADER, self.message.id)
        sent = Message(payload, key=key, headers=extra)
        self.emit(topic, [sent])
        return sent


def decode_payload(payload: bytes, decode: Callable[[bytes], Any] | None) -> Any:
    if decode is None:
        return payload
    try:
        return decode(payload)
    except Exception as exc:
        raise DecodeError(f"cannot decode payload: {type(exc).__name__}: {exc}") from exc


Handler = Callable[[Context], None]
"""Handles the messages of one context; returning means handled, raising means not."""

Middleware = Callable[[Handler], Handler]
"""Wraps a handler; composed first-listed-outermost (``compose``)."""


def compose(handler: Handler, middleware: Sequence[Middleware]) -> Handler:
    """``handler`` wrapped so that ``middleware[0]`` runs first and sees everything the later
    ones do: ``compose(h, [a, b]) == a(b(h))``."""
    for wrap in reversed(middleware):
        handler = wrap(handler)
    return handler
