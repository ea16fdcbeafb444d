"""A topic's dead letters (``<topic>.dlq``), read and changed through the ports alone: what
``msglab dlq list | show | replay | purge`` does.

Reading without losing: the entries are read as the group ``DLQ_GROUP`` (whose storage the
runtime declared before anything was dead-lettered) and held unsettled; closing the
subscriber gives them back to the group, as a crashed consumer's would (RabbitMQ requeues,
Kafka's offsets stay uncommitted, a files batch's lock is released; Redis Streams hands entries
pending with an earlier reader out again once idle ``claim_idle_s``, which the box sets to
``CLAIM_AT_ONCE_S``). Reading stops ``idle_s`` after the last entry came, or ``wait_s`` after
subscribing when none came (a Kafka group takes seconds to join).

Changing (replay, purge): acks are cumulative on Kafka (acking one entry acks every earlier one
of its partition), so the box never acks a selection. It acks everything it read after
writing the entries it keeps back to ``<topic>.dlq``: confirmed first, so a crash in between
duplicates a dead letter, never loses one. A replayed entry is published to its origin topic as
the original message (payload, key, headers, same id: an idempotent consumer applies it once).
An id asked for that is not there is refused before anything changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from msglab.app.records import LAST, DeadLetterRecord, dlq_topic
from msglab.app.runner import DLQ_GROUP
from msglab.config import ClientConfig
from msglab.errors import TransportError, UsageError
from msglab.message import Delivery, Message
from msglab.ports import Transport

CLAIM_AT_ONCE_S = 0.2
WAIT_S, IDLE_S = 15.0, 1.5
LIMIT = 10_000

Open = Callable[[ClientConfig], Transport]
T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One dead letter as read: the stored message and, if well-formed, its record."""

    stored: Message
    record: DeadLetterRecord | None

    @property
    def id(self) -> str:
        return self.stored.id


@dataclass(frozen=True)
class Changed:
    """What a replay or purge did: the ids it replayed or purged, and how many it kept."""

    done: list[str]
    kept: int


class DeadLetterBox:
    """The dead letters of ``topic`` on one transport. ``open_transport(config)`` makes the
    transport from the config the box adjusts (prefetch to ``limit``, ``claim_idle_s``)."""

    def __init__(
        self,
        open_transport: Open,
        config: ClientConfig,
        topic: str,
        wait_s: float = WAIT_S,
        idle_s: float = IDLE_S,
        limit: int = LIMIT,
    ) -> None:
        self.topic = topic
        self.dlq = dlq_topic(topic)
        reading = replace(config, prefetch=limit, claim_idle_s=CLAIM_AT_ONCE_S)
        self._transport = open_transport(reading)
        self._wait_s, self._idle_s, self._limit = wait_s, idle_s, limit

    def _read(self, finish: Callable[[list[tuple[Delivery, Entry]]], T]) -> T:
        """Read every entry there (up to ``limit``), holding each unsettled, then call
        ``finish(held)`` in the iterating thread (it may settle them; its error is raised
        here); what it leaves unsettled goes back to the group when the subscriber closes."""
        sub = self._transport.subscriber(DLQ_GROUP)
        held: list[tuple[Delivery, Entry]] = []
        seen: set[tuple[str, str]] = set()
        result: list[T] = []
        clock = {"since": time.monotonic()}

        def complete() -> None:
            if not result:
                result.append(finish(held))
                sub.close()  # from the iterating thread: the iteration ends at its next poll

        def on_idle() -> None:
            quiet = self._idle_s if held else self._wait_s
            if time.monotonic() - clock["since"] >= quiet:
                complete()

        sub.on_idle(on_idle)
        try:
            deliveries = sub.subscribe(self.dlq)
            clock["since"] = time.monotonic()
            for d in deliveries:
                if result:
                    break
                key = (d.message.id, d.message.headers.get(LAST, ""))
                if key in seen:  # a Redis claim hands an entry held here out again
                    continue
                seen.add(key)
                held.append((d, Entry(d.message, DeadLetterRecord.parse(d.message))))
                clock["since"] = time.monotonic()
                if len(held) >= self._limit:
                    complete()
        finally:
            sub.close()
        if not result:
            raise TransportError(f"{self.dlq}: the subscription ended before it was read")
        return result[0]

    def list(self) -> list[Entry]:
        """The dead letters there now, oldest first as the broker hands them out; nothing
        changes."""
        return self._read(lambda held: [entry for _, entry in held])

    def replay(self, ids: Collection[str] | None = None) -> Changed:
        """Publish the dead letters with ``ids`` (all when None) to their origin topics as
        the original messages, and remove them from the dead letters."""
        return self._change(ids, replay=True)

    def purge(self, ids: Collection[str] | None = None) -> Changed:
        """Remove the dead letters with ``ids`` (all when None)."""
        return self._change(ids, replay=False)

    def _change(self, ids: Collection[str] | None, replay: bool) -> Changed:
        def change(held: list[tuple[Delivery, Entry]]) -> Changed:
            chosen, kept = _select(held, ids, self.dlq)
            if not chosen:
                return Changed([], len(kept))
            pub = self._transport.publisher()
            try:
                if replay:
                    for entry in chosen:
                        origin, original = _origin(entry, self.dlq)
                        pub.publish(origin, [original])
                if kept:
                    pub.publish(self.dlq, [e.stored for e in kept])
            finally:
                pub.close()
            for d, _ in held:
                d.ack()
            return Changed([e.id for e in chosen], len(kept))

        return self._read(change)


def _origin(entry: Entry, dlq: str) -> tuple[str, Message]:
    """Where a dead letter came from, and the original message to publish there again."""
    if entry.record is None:
        raise UsageError(
            f"{entry.id} in {dlq} is no dead letter msglab wrote (no msglab- headers): "
            "its origin is unknown"
        )
    return entry.record.failure.origin, entry.record.message


def _select(
    held: Sequence[tuple[Delivery, Entry]], ids: Collection[str] | None, dlq: str
) -> tuple[list[Entry], list[Entry]]:
    entries = [entry for _, entry in held]
    if ids is None:
        return entries, []
    missing = sorted(set(ids) - {e.id for e in entries})
    if missing:
        raise UsageError(f"no dead letter with id {', '.join(missing)} in {dlq}")
    wanted = set(ids)
    return [e for e in entries if e.id in wanted], [e for e in entries if e.id not in wanted]
