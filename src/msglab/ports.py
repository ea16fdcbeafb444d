"""The one small interface every transport implements and every pattern uses.

A transport maps msglab's *topic* and *consumer group* onto its broker in one documented
way (see each module in ``msglab.brokers``), so plain clients of the broker interoperate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, runtime_checkable

from msglab.config import ClientConfig
from msglab.lag import Lag
from msglab.message import Batch, Delivery, Message


@runtime_checkable
class Publisher(Protocol):
    """Sends messages to a topic.

    ``publish`` blocks until every message is confirmed as the profile requires (at-most-once:
    handed to the client; at-least-once: confirmed by the broker), and raises PublishError
    naming the ids that were not confirmed and whether their fate is *unknown* (a timeout or a
    connection lost in flight: they may have arrived) or *failed* (definitely not stored).
    Messages with the same key are sent in order. Thread-safe. ``close()`` flushes what is
    pending and releases the connection; it is idempotent.
    """

    def publish(self, topic: str, messages: Iterable[Message]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Subscriber(Protocol):
    """Receives a topic's messages as a member of one consumer group.

    ``subscribe`` yields deliveries until ``close()`` is called (from any thread); the caller
    settles each with ``ack()`` or ``nack()``. Every group receives every message; members of
    one group share them. Unacked deliveries come back to the group after a nack, a lost
    connection or a crash (where the transport stores messages); an ack that cannot reach the
    broker because the connection died is dropped, and the message comes again. The
    subscription exists once ``subscribe`` has returned. Not thread-safe apart from
    ``close()``: one thread iterates and settles.
    """

    def subscribe(self, topic: str) -> Iterator[Delivery]: ...

    def batches(self, topic: str, max_messages: int = 100) -> Iterator[Batch]:
        """Like ``subscribe``, but yields what was fetched together as one Batch of 1 to
        ``max_messages`` messages, settled as a whole. A batch does not wait for more than
        what is there: a short one comes as soon as a poll found nothing more (and, where the
        broker pushes one message at a time, within about 50 ms of its first). Use one of
        ``subscribe`` and ``batches`` per subscriber."""

    def on_idle(self, callback: Callable[[], None]) -> None:
        """Have ``callback`` called in the iterating thread whenever a poll of the broker
        found nothing (at least every 0.2 s while idle): a consumer that settles deliveries
        in batches settles the last, short batch there instead of waiting for more."""

    def close(self) -> None: ...


@runtime_checkable
class Transport(Protocol):
    """A broker binding chosen by name (``msglab.brokers.open_transport``): makes publishers and
    subscribers that share one ClientConfig. ``profile_settings()`` states, per delivery
    profile, the exact client and server settings it turns on (``msglab profiles``).
    Optional: a classmethod ``client_settings(config) -> dict[str, str]``, the settings of its
    clients built from ``config`` that ``msglab run --set`` turns (Kafka's ``acks``), read back
    into a lab run's report."""

    name: str
    config: ClientConfig
    stores_messages: bool  # False: a message published while nobody listens is gone

    def publisher(self) -> Publisher: ...

    def subscriber(self, group: str) -> Subscriber: ...

    @classmethod
    def profile_settings(cls) -> dict[str, dict[str, str]]: ...


@runtime_checkable
class TopicAdmin(Protocol):
    """Optional capability: remove a topic and its groups' storage from the broker
    (benchmarks and tests clean up after themselves). Missing ones are ignored."""

    def delete_topic(self, topic: str, groups: Iterable[str]) -> None: ...


@runtime_checkable
class LagReader(Protocol):
    """Optional capability: how far consumer group ``group`` is behind on ``topic``, one
    ``Lag`` per partition (or queue), read from the broker at the call (no subscription is
    made, nothing is consumed or committed). Blocks at most the connect plus the request
    timeout; ConnectError naming host:port when the broker cannot be reached, UsageError when
    the topic does not exist. A transport that stores nothing (Redis pub/sub) has no backlog
    and does not offer it. Thread-safe: each call uses its own connection."""

    def lag(self, topic: str, group: str) -> list[Lag]: ...


@runtime_checkable
class TransactionalSubscriber(Protocol):
    """One consumer of a group plus one transactional producer: consume, transform and produce
    exactly once (the ``exactly-once`` profile). One thread iterates and settles; ``close()``
    works from any thread.

    ``batches(topic, max_messages)`` yields what was fetched together, as ``Subscriber.batches``
    does, reading only committed messages (``read_committed``); nothing is ever committed but
    through ``commit``. Each batch is settled before the next is fetched, in this order:

    * ``begin()`` opens a transaction;
    * ``publish(topic, messages)`` queues messages in it (any number of calls, any topics); it
      returns once they are handed to the client, their delivery is confirmed by ``commit``;
    * ``commit(batch)`` adds the batch's offsets (per partition, its last offset + 1) to the
      transaction and commits it: readers with ``read_committed`` see every message published
      in it and the group resumes after the batch, or neither. When the transaction had to be
      aborted (an abortable error, or an outcome the client could not learn), it raises
      ``TransactionAborted`` after rewinding: the batch comes again;
    * ``abort(batch)`` aborts the transaction (what was published is discarded) and rewinds:
      the batch's messages come again, each with its attempt + 1.

    ``FencedError`` (from any call): a newer instance with the same identity took over; this
    one must stop. Another ``TransportError``: the broker was lost or the producer failed for
    good; close it and build a new one (the group resumes from its committed offsets)."""

    def batches(self, topic: str, max_messages: int = 100) -> Iterator[Batch]: ...

    def on_idle(self, callback: Callable[[], None]) -> None: ...

    def begin(self) -> None: ...

    def publish(self, topic: str, messages: Iterable[Message]) -> None: ...

    def commit(self, batch: Batch) -> None: ...

    def abort(self, batch: Batch) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class TransactionalTransport(Protocol):
    """Optional capability (Kafka only): ``transactional(group, instance)`` makes a
    ``TransactionalSubscriber`` of ``group``. Its producer's identity is stable per (group,
    topic, instance): an instance started again takes over from its predecessor, whose open
    transaction is aborted at once and whose producer is fenced (``FencedError`` there). Run
    each concurrent instance of a group with its own ``instance``."""

    def transactional(self, group: str, instance: str) -> TransactionalSubscriber: ...


RawPublish = Callable[[ClientConfig, str, list[Message]], tuple[int, float]]
"""A raw-client baseline for ``msglab bench``: publishes the messages to the topic as the
driver alone would, with the transport's settings. It connects and warms up first (the first
message, confirmed), then times the rest; returns how many it timed and the seconds."""


class RawConsume(Protocol):
    """A raw-client baseline consumer for ``msglab bench``: consumes up to ``count`` messages of
    ``group`` (stopping after ``idle_s`` without one), sets ``ready`` once subscribed, and
    returns how many it consumed and the seconds from the first to the last of them."""

    def __call__(
        self,
        config: ClientConfig,
        topic: str,
        group: str,
        count: int,
        idle_s: float,
        ready: threading.Event | None = None,
    ) -> tuple[int, float]: ...


Handler = Callable[[Message], None]
"""Handles one message; returning means done, raising means it was not handled."""

Middleware = Callable[[Handler], Handler]
"""Wraps a handler; composed first-listed-outermost."""

__all__ = [
    "Batch",
    "Delivery",
    "Handler",
    "Lag",
    "LagReader",
    "Message",
    "Middleware",
    "Publisher",
    "Subscriber",
    "TopicAdmin",
    "TransactionalSubscriber",
    "TransactionalTransport",
    "Transport",
]
