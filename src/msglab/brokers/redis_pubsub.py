"""Redis pub/sub: at-most-once by nature (no storage, no acknowledgement).

Mapping: topic T is the channel ``T``. A message is one PUBLISH whose body is a small envelope
a plain client can read: the line ``msglab/1``, a JSON line ``{"id", "key", "headers"}``, then
the payload bytes. Consumer groups do not exist: every subscriber receives every message
published while it is subscribed, and nothing published while nobody listens. ``ack`` and
``nack`` do nothing. Asking for at-least-once is refused, because nothing could keep the promise.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from msglab.brokers._redis_common import (
    PipelinedPublisher,
    boundary,
    check_reachable,
    connect,
    failover_settings,
    raw_pipelined,
    set_settings,
    subscriber_retries,
)
from msglab.config import ClientConfig
from msglab.errors import TransportError, UsageError
from msglab.message import Delivery, Message
from msglab.ports import Publisher, RawConsume, RawPublish, Subscriber
from msglab.profiles import DeliveryProfile, refuse_exactly_once
from msglab.subscription import SubscriberBase

NAME = "redis-pubsub"
MAGIC = b"msglab/1\n"


def encode(m: Message) -> bytes:
    meta = json.dumps({"id": m.id, "key": m.key, "headers": dict(m.headers)}, separators=(",", ":"))
    return MAGIC + meta.encode() + b"\n" + m.payload


def decode(body: bytes) -> Message:
    if not body.startswith(MAGIC):  # published by a plain client: payload only
        return Message(payload=body)
    meta, _, payload = body[len(MAGIC) :].partition(b"\n")
    fields = json.loads(meta)
    return Message.unchecked(payload, fields["key"], fields["headers"], fields["id"])


def _noop(d: Delivery, ok: bool, requeue: bool) -> None:
    """Pub/sub has no acknowledgement."""


class PubSubSubscriber(SubscriberBase):
    def __init__(self, config: ClientConfig, group: str) -> None:
        super().__init__(group)
        self._config = config
        # reconnects (re-subscribing) after a lost connection; what was published meanwhile
        # is gone, as pub/sub has no storage
        self._client = connect(config, retries=subscriber_retries(config))
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)

    def _open(self, topic: str) -> None:
        check_reachable(NAME, self._config)
        with boundary(NAME, self._config.url):
            self._pubsub.subscribe(topic)
            deadline = time.monotonic() + self._config.request_timeout_s
            while not self._pubsub.subscribed:  # the server's confirmation sets the flag
                if time.monotonic() > deadline:
                    raise TransportError(f"{NAME}: SUBSCRIBE {topic} was not confirmed")
                self._pubsub.get_message(timeout=0.1)

    def _deliveries(self, topic: str) -> Iterator[Delivery | None]:
        get = self._pubsub.get_message
        with boundary(NAME, self._config.url):
            while not self._closed.is_set():
                raw = get(timeout=0.2)
                if raw is None:
                    yield None
                elif raw["type"] == "message":
                    yield Delivery(decode(raw["data"]), topic, 1, False, _noop)

    def _more_coming(self, began: float) -> bool:
        """A batch takes what has arrived: it ends when redis-py holds no further message (its
        buffer or the socket), never by waiting. Pub/sub is for latency: waiting for a batch to
        fill added up to ``BATCH_WAIT_S`` to every message (measured: p50 41 ms, p99 222 ms at
        1,500 msg/s; without the wait, see the matrix's pub/sub latency row)."""
        conn = self._pubsub.connection
        return conn is not None and bool(conn.can_read(timeout=0))

    def _release(self) -> None:
        self._pubsub.close()
        self._client.close()


class RedisPubSubTransport:
    name = NAME
    stores_messages = False

    def __init__(self, config: ClientConfig) -> None:
        refuse_exactly_once(self.name, config.profile)
        if config.profile is not DeliveryProfile.AT_MOST_ONCE:
            raise UsageError(
                f"{NAME} cannot promise {config.profile.value}: pub/sub stores nothing and has "
                "no acknowledgement, so a message is lost whenever no subscriber is connected "
                "or a subscriber falls behind; use redis-streams for at-least-once"
            )
        self.config = config

    def publisher(self) -> Publisher:
        return PipelinedPublisher(NAME, self.config, _publish)

    def subscriber(self, group: str) -> Subscriber:
        return PubSubSubscriber(self.config, group)

    @classmethod
    def client_settings(cls, config: ClientConfig) -> dict[str, str]:
        return set_settings(config)

    @classmethod
    def profile_settings(cls) -> dict[str, dict[str, str]]:
        return {
            "at-most-once": {
                "publish": "PUBLISH, pipelined in chunks of 500; no client-side retry",
                "consume": "SUBSCRIBE; no ack exists",
                "server": "nothing stored; a slow subscriber is cut off at "
                "client-output-buffer-limit pubsub",
                **failover_settings(
                    "SUBSCRIBE again; what was published meanwhile is gone (no storage)"
                ),
            },
            "at-least-once": {"refused": "pub/sub has no storage and no ack"},
        }


# -- raw-client baselines for `msglab bench` ------------------------------------------------


def _publish(pipe: Any, topic: str, m: Message) -> None:
    pipe.publish(topic, encode(m))


def _raw_publish(config: ClientConfig, topic: str, messages: list[Message]) -> tuple[int, float]:
    return raw_pipelined(config, topic, messages, _publish)


def _raw_consume(
    config: ClientConfig,
    topic: str,
    group: str,
    count: int,
    idle_s: float,
    ready: threading.Event | None = None,
) -> tuple[int, float]:
    client = connect(config, retries=0)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(topic)
    while not pubsub.subscribed:
        pubsub.get_message(timeout=0.1)
    if ready is not None:
        ready.set()
    got, first, last = 0, 0.0, time.monotonic()
    while got < count and time.monotonic() - last < idle_s:
        raw = pubsub.get_message(timeout=0.2)
        if raw is not None and raw.get("type") == "message":
            # what an application does: split its metadata (JSON here) from the payload
            meta, _, _payload = raw["data"][len(MAGIC) :].partition(b"\n")
            _fields = json.loads(meta)
            got += 1
            last = time.monotonic()
            first = first or last
    pubsub.close()
    client.close()
    return got, last - first


def raw_publishers(profile: DeliveryProfile) -> dict[str, RawPublish]:
    """The raw client doing the publish job with the same settings."""
    return {"redis-py pipelined PUBLISH": _raw_publish}


RAW_CONSUMERS: dict[str, RawConsume] = {"redis-py SUBSCRIBE": _raw_consume}
