"""The wire form of retry entries and dead letters: the original message (payload, key, id and
headers kept) plus ``msglab-*`` headers, so any client of the broker can read them.

A retry entry on ``<topic>.retry`` carries ``msglab-attempt`` (the attempt it is for, 2 for
the first retry), ``msglab-due`` (epoch seconds), ``msglab-first-failure`` and
``msglab-last-failure`` (epoch seconds), ``msglab-origin`` (the topic), ``msglab-group`` and
``msglab-handler``, ``msglab-error-type`` and ``msglab-error``. A dead letter on
``<topic>.dlq`` carries the same, ``msglab-attempt`` being the attempts made; it has no due
time. Stripping every ``msglab-`` header gives the original message back (``original``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from msglab.message import Message

PREFIX = "msglab-"
ATTEMPT, DUE = "msglab-attempt", "msglab-due"
FIRST, LAST = "msglab-first-failure", "msglab-last-failure"
ORIGIN, GROUP, HANDLER = "msglab-origin", "msglab-group", "msglab-handler"
ERROR_TYPE, ERROR = "msglab-error-type", "msglab-error"
ERROR_MAX = 2000  # characters of the error text kept (a header, not a log)

RETRY_SUFFIX, DLQ_SUFFIX = ".retry", ".dlq"


def retry_topic(topic: str) -> str:
    return topic + RETRY_SUFFIX


def retry_group(group: str) -> str:
    """The group the retry flow of ``group`` reads ``<topic>.retry`` as: a group of its own, so
    that on Kafka the retry flow's consumer never joins (and rebalances) the main flow's group:
    measured, the main flow's first fetch waited 385 ms for the two to settle."""
    return group + RETRY_SUFFIX


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


class FlowError(Exception):
    """The retry or dead-letter place could not take a message (its broker refused or was
    unreachable): the delivery is not acked, so it comes again."""


@dataclass(frozen=True)
class Failure:
    """Where a message failed and how: what both record kinds carry."""

    origin: str
    group: str
    handler: str
    attempt: int
    first_failure: float
    last_failure: float
    error_type: str
    error: str

    def headers(self) -> dict[str, str]:
        return {
            ATTEMPT: str(self.attempt),
            FIRST: repr(self.first_failure),
            LAST: repr(self.last_failure),
            ORIGIN: self.origin,
            GROUP: self.group,
            HANDLER: self.handler,
            ERROR_TYPE: self.error_type,
            ERROR: self.error[:ERROR_MAX],
        }

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Failure:
        h = headers
        return cls(
            origin=h[ORIGIN],
            group=h[GROUP],
            handler=h[HANDLER],
            attempt=int(h[ATTEMPT]),
            first_failure=float(h[FIRST]),
            last_failure=float(h[LAST]),
            error_type=h.get(ERROR_TYPE, ""),
            error=h.get(ERROR, ""),
        )


def error_fields(error: BaseException) -> tuple[str, str]:
    """The error's type name and text (its cause's appended: a DecodeError names why)."""
    text = str(error)
    cause = error.__cause__
    if cause is not None and str(cause) not in text:
        text = f"{text} (caused by {type(cause).__name__}: {cause})"
    return type(error).__name__, text


def original(message: Message) -> Message:
    """``message`` without msglab's retry and dead-letter headers."""
    kept = {k: v for k, v in message.headers.items() if not k.startswith(PREFIX)}
    return Message(message.payload, key=message.key, headers=kept, id=message.id)


def with_failure(message: Message, failure: Failure, due: float | None = None) -> Message:
    headers = {**original(message).headers, **failure.headers()}
    if due is not None:
        headers[DUE] = repr(due)
    return Message(message.payload, key=message.key, headers=headers, id=message.id)


@dataclass(frozen=True)
class RetryEntry:
    """A retry entry read back: the original message, when it is due, and its failure."""

    message: Message
    due: float
    failure: Failure

    @classmethod
    def parse(cls, message: Message) -> RetryEntry | None:
        """None for a message that is not a well-formed retry entry."""
        try:
            return cls(original(message), float(message.headers[DUE]), Failure.of(message.headers))
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class DeadLetterRecord:
    """A dead letter read back: the original message and why it was given up."""

    message: Message
    failure: Failure

    @classmethod
    def parse(cls, message: Message) -> DeadLetterRecord | None:
        try:
            return cls(original(message), Failure.of(message.headers))
        except (KeyError, ValueError):
            return None

    def to_json(self) -> dict[str, object]:
        m, f = self.message, self.failure
        return {
            "id": m.id,
            "key": m.key,
            "headers": dict(m.headers),
            "payload": m.payload.decode("utf-8", errors="replace"),
            "payload_bytes": len(m.payload),
            "origin": f.origin,
            "group": f.group,
            "handler": f.handler,
            "attempts": f.attempt,
            "first_failure": f.first_failure,
            "last_failure": f.last_failure,
            "error_type": f.error_type,
            "error": f.error,
        }


def failures(
    messages: Sequence[Message], failure: Failure, due: float | None = None
) -> list[Message]:
    return [with_failure(m, failure, due) for m in messages]
