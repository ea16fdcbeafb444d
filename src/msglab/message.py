"""Message (a frozen value) and Delivery (a message in the hands of a consumer).

Message ids are assigned by the producer, unique, and the dedup key everywhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


def new_id() -> str:
    """A fresh message id (32 hex characters)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Message:
    """What a producer sends: ``payload`` bytes, an optional ``key`` (ordering and partitioning),
    string ``headers``, and a unique ``id``. Immutable: headers are a read-only mapping."""

    payload: bytes
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    id: str = field(default_factory=new_id)

    @classmethod
    def unchecked(
        cls, payload: bytes, key: str | None, headers: dict[str, str], id: str
    ) -> Message:
        """The same value, built without validation from parts known to be valid: decoded
        from the wire by a transport (the consume hot path) or made by a producer loop.
        ``headers`` is wrapped, not copied: it must not change afterwards (messages may
        share one dict)."""
        m = _new(cls)
        _set_payload(m, payload)
        _set_key(m, key)
        _set_headers(m, MappingProxyType(headers))
        _set_id(m, id)
        return m

    def __post_init__(self) -> None:
        if type(self.payload) is not bytes and not isinstance(
            self.payload, bytes | bytearray | memoryview
        ):
            raise TypeError(f"payload must be bytes, not {type(self.payload).__name__}")
        if type(self.headers) is not MappingProxyType:
            object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))


# Message.unchecked fills the slots through their descriptors: about twice as fast as
# object.__setattr__ on a frozen dataclass (the consume hot path builds one per delivery).
_new = object.__new__
_set_payload: Callable[[Message, bytes], None] = vars(Message)["payload"].__set__
_set_key: Callable[[Message, str | None], None] = vars(Message)["key"].__set__
_set_headers: Callable[[Message, Mapping[str, str]], None] = vars(Message)["headers"].__set__
_set_id: Callable[[Message, str], None] = vars(Message)["id"].__set__


@dataclass(slots=True)
class Delivery:
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

    def ack(self) -> None:
        if not self.settled:
            self.settled = True
            self._settle(self, True, False)

    def nack(self, requeue: bool = True) -> None:
        if not self.settled:
            self.settled = True
            self._settle(self, False, requeue)
