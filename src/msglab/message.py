"""Message (a frozen value), Delivery (a message in the hands of a consumer) and Batch
(messages fetched together and settled together).

Message ids are assigned by the producer, unique, and the dedup key everywhere.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple


def new_id() -> str:
    """A fresh message id (32 hex characters)."""
    return uuid.uuid4().hex


class _MessageFields(NamedTuple):
    payload: bytes
    key: str | None
    headers: Mapping[str, str]
    id: str


class Message(_MessageFields):
    """What a producer sends: ``payload`` bytes, an optional ``key`` (ordering and partitioning),
    string ``headers``, and a unique ``id``. Immutable: headers are a read-only mapping.

    A tuple underneath, because a consumer builds one per delivery and a tuple is the cheapest
    immutable object Python builds (a frozen dataclass took ~1.1 us, a third of Kafka's whole
    consume path). It compares equal only to another Message with equal fields.

    The tuple holds the headers as a plain dict and ``headers`` wraps it in a read-only view
    on each access: a view per message is one more object for the garbage collector to
    track, and a consumer holding a batch of 500 messages made it collect so often that it
    doubled the cost of decoding (measured). Unpacking the tuple hands out that dict: do not
    change it.
    """

    __slots__ = ()

    def __new__(
        cls,
        payload: bytes,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        id: str | None = None,
    ) -> Message:
        if type(payload) is not bytes and not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        own = dict(headers) if headers else {}
        return _tuple_new(cls, (payload, key, own, id if id is not None else new_id()))

    @classmethod
    def unchecked(
        cls, payload: bytes, key: str | None, headers: dict[str, str], id: str
    ) -> Message:
        """The same value, built without validation from parts known to be valid: decoded
        from the wire by a transport (the consume hot path) or made by a producer loop.
        ``headers`` is kept, not copied: it must not change afterwards (messages may share
        one dict). A transport's batch loop may build ``tuple.__new__(Message, (payload, key,
        headers, id))`` itself: that is this, without the call."""
        return _tuple_new(cls, (payload, key, headers, id))

    @property
    def headers(self) -> Mapping[str, str]:
        return MappingProxyType(_headers(self))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]  # headers are a mapping: not hashable


_tuple_new = tuple.__new__
_headers = operator.itemgetter(2)  # the tuple's own headers dict, under the property


class _SettledOnce:
    """``ack()`` / ``nack()`` for a delivery or a batch: the first settles, later ones are
    ignored. The subclass holds ``settled`` and the transport's ``_settle(item, ok, requeue)``."""

    __slots__ = ("settled",)
    settled: bool
    _settle: Callable[[Any, bool, bool], None]

    def ack(self) -> None:
        if not self.settled:
            self.settled = True
            self._settle(self, True, False)

    def nack(self, requeue: bool = True) -> None:
        if not self.settled:
            self.settled = True
            self._settle(self, False, requeue)


@dataclass(slots=True)
class Delivery(_SettledOnce):
    """One delivery of a message to a subscriber.

    ``attempt`` counts deliveries of this message to this consumer group (1 = first) where the
    broker tells (RabbitMQ quorum queues, Redis Streams); elsewhere it is 1, or 2 when the
    broker says ``redelivered``. Exactly one of ``ack()`` / ``nack()`` settles a delivery;
    settling twice is ignored. ``nack(requeue=True)`` asks for redelivery.

    ``token`` is the transport's handle for settling (a Kafka message, a channel and delivery
    tag, a stream entry id), opaque to users; the transport's ``settle(delivery, ok, requeue)``
    is shared by all its deliveries, so a delivery costs no closure.
    """

    message: Message
    topic: str
    attempt: int
    redelivered: bool
    _settle: Callable[[Delivery, bool, bool], None]
    token: Any = None
    settled: bool = False


@dataclass(slots=True)
class Batch(_SettledOnce):
    """Messages a subscriber fetched together, settled together (``Subscriber.batches``).

    ``messages`` keeps the broker's order; ``attempts[i]`` is ``messages[i]``'s attempt, as
    ``Delivery.attempt`` (a value above 1 means a redelivery). ``ack()`` settles every message
    of the batch, ``nack(requeue=True)`` asks for all of them again; settling twice is ignored.
    One object per batch instead of one per message: the consume path's cheapest form.

    ``messages`` may decode each message as it is read (Kafka's does): iterate it once and
    keep what you need. Holding hundreds of decoded messages at once makes Python's garbage
    collector run twice as often and, measured, doubled Kafka's consume cost.
    """

    topic: str
    messages: Sequence[Message]
    attempts: list[int]
    _settle: Callable[[Batch, bool, bool], None]
    token: Any = None
    settled: bool = False

    def __len__(self) -> int:
        return len(self.messages)
