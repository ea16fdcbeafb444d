"""Redis Streams: at-least-once with consumer groups, acks and claims of dead consumers' work.

Mapping: topic T is the stream ``T``; a message is one entry with fields ``id``, ``payload``,
``key`` (when set) and ``h.<name>`` per header, so a plain XRANGE reads it. Consumer group G is
the stream's group ``G``, created at id 0 (a new group reads the stream from its start). Each
subscriber is a consumer named ``<client_id>-<random>``.

at-least-once: XREADGROUP, handler, XACK (acks batched and sent before the next read); entries
left pending by a dead consumer are taken over with XAUTOCLAIM once idle ``claim_idle_s``; the
delivery count is the entry's counter in the pending list. at-most-once: XREADGROUP ... NOACK
(nothing pending, nothing redelivered). Durability of confirmed entries is the server's AOF
(``appendfsync always`` in msglab's Redis).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
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
from msglab.config import ClientConfig, check_name
from msglab.errors import UsageError
from msglab.extras import driver_import
from msglab.lag import Lag
from msglab.message import Batch, Delivery, Message
from msglab.ports import Publisher, RawConsume, RawPublish, Subscriber
from msglab.profiles import DeliveryProfile, refuse_exactly_once
from msglab.subscription import SubscriberBase

with driver_import("redis", __name__):
    import redis

NAME = "redis-streams"
LOG = logging.getLogger("msglab.brokers.redis_streams")


def encode(m: Message) -> dict[bytes | str, bytes | str]:
    fields: dict[bytes | str, bytes | str] = {"id": m.id, "payload": m.payload}
    if m.key is not None:
        fields["key"] = m.key
    for k, v in m.headers.items():
        fields[f"h.{k}"] = v
    return fields


def decode(fields: dict[bytes, bytes]) -> Message:
    headers = {k[2:].decode(): v.decode() for k, v in fields.items() if k.startswith(b"h.")}
    key = fields.get(b"key")
    return Message.unchecked(
        fields.get(b"payload", b""),
        key.decode() if key else None,
        headers,
        fields[b"id"].decode(),
    )


Entry = tuple[bytes, dict[bytes, bytes]]  # a stream entry: its id and its fields
UNWRITABLE = ("NOREPLICAS", "READONLY")
"""Errors of a server that takes no writes for now (min-replicas-to-write without its replicas,
a replica): a consumer's XREADGROUP and XACK are writes; it waits as for a lost connection."""


class StreamsSubscriber(SubscriberBase):
    fetches_batches = True

    def __init__(self, config: ClientConfig, group: str) -> None:
        super().__init__(group)
        self._config = config
        self._consumer = f"{config.client_id}-{uuid.uuid4().hex[:8]}"
        self._client = connect(config, retries=subscriber_retries(config))
        self._acks: list[bytes] = []
        self._retry: list[bytes] = []
        self._noack = config.profile is DeliveryProfile.AT_MOST_ONCE
        self._topic = ""
        self._next_claim = 0.0
        self._outage = 0  # fetches failed in a row for a lost connection

    def _open(self, topic: str) -> None:
        self._topic = topic
        self._next_claim = time.monotonic() + self._config.claim_idle_s / 2
        check_reachable(NAME, self._config)
        with boundary(NAME, self._config.url):
            self._create_group(topic)

    def _create_group(self, topic: str) -> None:
        """The group, reading the stream from its start (and the stream, if missing)."""
        try:
            self._client.xgroup_create(topic, self._group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _fetch(self, topic: str, count: int) -> tuple[list[Entry], dict[bytes, int]]:
        """Acks made since the last fetch go first; then the next entries: nacked ones, those
        a dead consumer left (every claim_idle_s / 2), or new ones; with the delivery counts
        of the redelivered ones."""
        with boundary(NAME, self._config.url):
            try:
                self._flush_acks(topic)
                entries, redelivery = self._retried(topic), True
                if not entries and time.monotonic() >= self._next_claim:
                    entries = self._claim_idle(topic)
                    self._next_claim = time.monotonic() + self._config.claim_idle_s / 2
                if not entries:
                    entries, redelivery = self._read_new(topic, count), False
            except redis.ResponseError as exc:
                if str(exc).startswith(UNWRITABLE):
                    self._connection_lost(exc)
                    return [], {}
                # NOGROUP: no group (or stream) now; UNBLOCKED: deleted during a blocking read
                if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                self._group_lost(topic, exc)
                return [], {}
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._connection_lost(exc)
                return [], {}
            if self._outage:
                LOG.warning(
                    "%s: %s (%s): connected again after %d attempts",
                    NAME,
                    self._topic,
                    self._group,
                    self._outage,
                )
                self._outage = 0
            return entries, self._delivery_counts(topic, entries) if redelivery else {}

    def _connection_lost(self, exc: redis.RedisError) -> None:
        """The server went away past the client's own retries (a restart, a Sentinel failover
        whose old primary refuses writes until the Sentinels name the new one), or takes no
        writes for now (``UNWRITABLE``): wait, growing to the reconnect backoff's longest, and
        fetch again; a subscriber never gives up while open. Its unsent acks wait for the next
        fetch (an entry acked late is redelivered at worst, never lost)."""
        delays = self._config.reconnect.delays() or [self._config.reconnect.max_s]
        delay = delays[min(self._outage, len(delays) - 1)]
        self._outage += 1
        LOG.warning(
            "%s: %s (%s): connection lost (%s); reconnecting in %.1fs (attempt %d)",
            NAME,
            self._topic,
            self._group,
            exc,
            delay,
            self._outage,
        )
        self._closed.wait(delay)
        # a new client: redis-py's Sentinel-managed connection can stay on a demoted primary
        # (it answers READONLY to every retry, redis-py 8.1), a new one asks the Sentinels
        self._client.close()
        self._client = connect(self._config, retries=subscriber_retries(self._config))

    def _group_lost(self, topic: str, exc: redis.ResponseError) -> None:
        """The server lost the group or the whole stream (a restart without the data: AOF
        not synced, a failover to a replica behind): the group is created again from the
        stream's start, so what the server still holds is delivered; the acks and retries of
        entries of the lost group are dropped."""
        LOG.warning("%s: %s; creating group %s again from the start", NAME, exc, self._group)
        self._acks, self._retry = [], []
        self._create_group(topic)

    def _deliveries(self, topic: str) -> Iterator[Delivery | None]:
        while not self._closed.is_set():
            entries, counts = self._fetch(topic, self._config.prefetch)
            if not entries:
                yield None
            for entry_id, fields in entries:
                attempt = counts.get(entry_id, 1)
                yield Delivery(decode(fields), topic, attempt, attempt > 1, self._settle, entry_id)

    def _batches(self, topic: str, limit: int) -> Iterator[Batch | None]:
        """One Batch per XREADGROUP (or claim)."""
        while not self._closed.is_set():
            entries, counts = self._fetch(topic, limit)
            if not entries:
                yield None
                continue
            yield Batch(
                topic,
                [decode(fields) for _, fields in entries],
                [counts.get(entry_id, 1) for entry_id, _ in entries],
                self._settle_batch,
                [entry_id for entry_id, _ in entries],
            )

    def _release(self) -> None:
        try:
            with boundary(NAME, self._config.url):
                self._flush_acks(self._topic)
        finally:
            self._client.close()

    def _read_new(self, topic: str, count: int) -> list[Entry]:
        reply = self._client.xreadgroup(
            self._group,
            self._consumer,
            {topic: ">"},
            count=count,
            block=200,
            noack=self._noack,
        )
        return list(reply[0][1]) if reply else []

    def _retried(self, topic: str) -> list[Entry]:
        if not self._retry:
            return []
        ids, self._retry = self._retry, []
        claimed = self._client.xclaim(topic, self._group, self._consumer, 0, ids)
        return [(i, f) for i, f in claimed if f]

    def _claim_idle(self, topic: str) -> list[Entry]:
        """Take over entries another (dead) consumer left pending for ``claim_idle_s``."""
        idle_ms = int(self._config.claim_idle_s * 1000)
        reply = self._client.xautoclaim(
            topic, self._group, self._consumer, idle_ms, start_id="0-0", count=self._config.prefetch
        )
        return [(i, f) for i, f in reply[1] if f]

    def _delivery_counts(self, topic: str, entries: list[Entry]) -> dict[bytes, int]:
        if not entries:
            return {}
        ids = [i for i, _ in entries]
        pending = self._client.xpending_range(
            topic,
            self._group,
            min=min(ids, key=_entry_order),  # not min(ids): b"5-10" < b"5-9" as bytes
            max=max(ids, key=_entry_order),
            count=len(ids) * 2 + 10,
            consumername=self._consumer,
        )
        return {p["message_id"]: int(p["times_delivered"]) for p in pending}

    def _flush_acks(self, topic: str) -> None:
        if self._acks:
            self._client.xack(topic, self._group, *self._acks)
            self._acks = []

    def _settle(self, d: Delivery, ok: bool, requeue: bool) -> None:
        if self._noack:
            return
        if ok or not requeue:
            self._acks.append(d.token)
        else:
            self._retry.append(d.token)

    def _settle_batch(self, b: Batch, ok: bool, requeue: bool) -> None:
        if self._noack:
            return
        (self._acks if ok or not requeue else self._retry).extend(b.token)


def _entry_order(entry_id: bytes) -> tuple[int, int]:
    millis, _, seq = entry_id.partition(b"-")
    return int(millis), int(seq)


class RedisStreamsTransport:
    name = NAME
    stores_messages = True

    def __init__(self, config: ClientConfig) -> None:
        refuse_exactly_once(self.name, config.profile)
        self.config = config

    def publisher(self) -> Publisher:
        return PipelinedPublisher(NAME, self.config, _xadd)

    def subscriber(self, group: str) -> Subscriber:
        return StreamsSubscriber(self.config, group)

    def delete_topic(self, topic: str, groups: Iterable[str]) -> None:
        client = connect(self.config, retries=0)
        with boundary(NAME, self.config.url):
            client.delete(topic)  # the stream, its groups and their pending lists
        client.close()

    def lag(self, topic: str, group: str) -> list[Lag]:
        """The stream (one Lag) from XINFO GROUPS (Redis 7): ``ready`` is the group's
        ``lag`` (entries not yet delivered to it; Redis says nil when it cannot count them,
        after entries were deleted: then unknown), ``unacked`` its ``pending`` (delivered,
        not XACKed: the pending entries list). A group not created yet would read the stream
        from its start (msglab creates groups at id 0): every entry is ready."""
        check_name("topic", topic)
        check_name("group", group)
        client = connect(self.config, retries=0)
        try:
            with boundary(NAME, self.config.url):
                if not client.exists(topic):
                    raise UsageError(f"{NAME}: no stream {topic!r}")
                groups = {g["name"].decode(): g for g in client.xinfo_groups(topic)}
                if group not in groups:
                    length = int(client.xlen(topic))
                    note = "no group yet: it would read the stream from its start"
                    return [Lag(topic, length, length, 0, {"consumers": 0}, note)]
        finally:
            client.close()
        return [stream_lag(topic, groups[group])]

    @classmethod
    def client_settings(cls, config: ClientConfig) -> dict[str, str]:
        return set_settings(config)

    @classmethod
    def profile_settings(cls) -> dict[str, dict[str, str]]:
        return {
            "at-least-once": {
                "publish": "XADD, pipelined in chunks of 500; no client-side retry",
                "consume": "XREADGROUP (pending list), XACK after the handler (batched)",
                "redelivery": "nack: XCLAIM to self; dead consumer: XAUTOCLAIM after claim_idle_s",
                "server": "appendonly yes, appendfsync always (msglab infra)",
                **failover_settings(
                    "past them the subscriber waits (the same backoff, never giving up) and "
                    "connects anew through the Sentinels; what was read and not acked stays "
                    "pending and comes again; a group the new primary lacks (a replica behind) "
                    "is created again from the start"
                ),
            },
            "at-most-once": {
                "publish": "XADD, pipelined in chunks of 500; no client-side retry",
                "consume": "XREADGROUP ... NOACK (nothing pending, never redelivered)",
                "server": "appendonly yes, appendfsync always (msglab infra)",
                **failover_settings(
                    "what was read (NOACK) does not come again; entries the new primary lacks "
                    "are gone"
                ),
            },
        }


def stream_lag(topic: str, info: dict[str, Any]) -> Lag:
    """A Lag from one group's XINFO GROUPS entry."""
    pending, lag = int(info["pending"]), info.get("lag")
    details: dict[str, int | str] = {"consumers": int(info["consumers"])}
    read, last = info.get("entries-read"), info["last-delivered-id"]
    details |= {"entries-read": "unknown" if read is None else int(read), "last-delivered": last}
    if isinstance(last, bytes):
        details["last-delivered"] = last.decode()
    if lag is None:
        note = "Redis cannot count the undelivered entries (some were deleted)"
        return Lag(topic, None, None, pending, details, note)
    return Lag(topic, int(lag) + pending, int(lag), pending, details, STREAM_NOTE)


STREAM_NOTE = (
    "ready: the group's lag (entries not delivered yet); unacked: its pending entries (a "
    "gone consumer's are taken over after claim_idle_s)"
)


# -- raw-client baselines for `msglab bench` ------------------------------------------------


def _xadd(pipe: Any, topic: str, m: Message) -> None:
    pipe.xadd(topic, encode(m))


def _raw_publish(config: ClientConfig, topic: str, messages: list[Message]) -> tuple[int, float]:
    return raw_pipelined(config, topic, messages, _xadd)


def _raw_consume(
    config: ClientConfig,
    topic: str,
    group: str,
    count: int,
    idle_s: float,
    ready: threading.Event | None = None,
) -> tuple[int, float]:
    client = connect(config, retries=0)
    with contextlib.suppress(redis.ResponseError):  # the group exists
        client.xgroup_create(topic, group, id="0", mkstream=True)
    if ready is not None:
        ready.set()
    got, first, last = 0, 0.0, time.monotonic()
    noack = config.profile is DeliveryProfile.AT_MOST_ONCE
    while got < count and time.monotonic() - last < idle_s:
        reply = client.xreadgroup(
            group, "raw", {topic: ">"}, count=config.prefetch, block=200, noack=noack
        )
        entries = reply[0][1] if reply else []
        for _id, fields in entries:  # what an application does: read payload, key, headers
            _payload, key = fields.get(b"payload"), fields.get(b"key")
            _key = key.decode() if key else None
            _headers = {
                k[2:].decode(): v.decode() for k, v in fields.items() if k.startswith(b"h.")
            }
        if entries:
            got += len(entries)
            last = time.monotonic()
            first = first or last
            if not noack:
                client.xack(topic, group, *[i for i, _ in entries])
    client.close()
    return got, last - first


def raw_publishers(profile: DeliveryProfile) -> dict[str, RawPublish]:
    """The raw client doing the publish job with the same settings."""
    return {"redis-py pipelined XADD": _raw_publish}


RAW_CONSUMERS: dict[str, RawConsume] = {"redis-py XREADGROUP + XACK": _raw_consume}
