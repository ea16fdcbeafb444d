"""Apache Kafka through confluent-kafka (librdkafka).

Mapping: topic T is the Kafka topic ``T`` (created with ``ClientConfig.partitions`` partitions
on first use); consumer group G is ``group.id`` G, starting at the earliest offset; the key
chooses the partition (``murmur2_random``, as the Java client does); headers are Kafka
headers, plus ``msglab-id`` carrying the message id.

at-least-once: ``acks=all`` and the idempotent producer (retries without duplicates while the
producer lives); the consumer stores a message's offset only after it was acked, and stored
offsets are committed every second and on close: a crash redelivers what was handled but not
committed. Acks are cumulative per partition, as Kafka's offsets are.
at-most-once: ``acks=1``, no retries; the consumer commits a fetched batch synchronously
*before* handing it out: a crash loses what was committed but not handled; nack does nothing.
``ClientConfig.acks`` overrides the profile's acks (``0``, ``1``: the idempotent producer is
then off, and an at-least-once producer's retries may duplicate).

Kafka has no per-message nack: ``nack(requeue=True)`` seeks the partition back to the message,
which is then delivered again (``redelivered``, ``attempt`` counted in this consumer). After a
restart Kafka cannot say a message is a redelivery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

from msglab.config import ClientConfig, check_name
from msglab.errors import (
    ConnectError,
    FencedError,
    PublishError,
    TransactionAborted,
    TransportError,
    UsageError,
)
from msglab.extras import driver_import
from msglab.lag import Lag
from msglab.message import Batch, Delivery, Message
from msglab.ports import (
    Publisher,
    RawConsume,
    RawPublish,
    Subscriber,
    TransactionalSubscriber,
)
from msglab.profiles import DeliveryProfile
from msglab.subscription import SubscriberBase

with driver_import("kafka", __name__):
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

NAME = "kafka"
LOG = logging.getLogger("msglab.brokers.kafka")  # librdkafka's log, instead of raw stderr
ID_HEADER = "msglab-id"
UNKNOWN_OUTCOME = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
}


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _safe(profile: DeliveryProfile) -> bool:
    """Whether clients of ``profile`` keep what is not confirmed or not handled: at-least-once,
    and exactly-once, which builds on it (a ClientConfig's profile is never effectively-once)."""
    return profile is not DeliveryProfile.AT_MOST_ONCE


METADATA_REFRESH_MS = 300_000
"""``topic.metadata.refresh.interval.ms``: the periodic metadata refresh, a backstop (librdkafka's
and the Java client's default); a leader change is found by the refresh an error starts."""
METADATA_FAST_REFRESH_MS = 100
"""``topic.metadata.refresh.fast.interval.ms``: a partition that lost its leader has its metadata
asked for at once, then again after this, doubling up to ``RETRY_BACKOFF_MAX_MS``, until a
leader is known (librdkafka's default, pinned)."""
RETRY_BACKOFF_MS, RETRY_BACKOFF_MAX_MS = 100, 1000
"""``retry.backoff.ms`` / ``retry.backoff.max.ms``: the wait before a failed request (a produce
whose leader moved) is sent again, doubling (librdkafka's defaults, pinned)."""


def failover_settings(config: ClientConfig) -> dict[str, Any]:
    """What every Kafka client of msglab does when a broker goes away or a partition's leader
    moves (a node of kafka-cluster killed or cut off): a connection not set up within the
    connect timeout is given up; a request not answered within the request timeout closes the
    connection, which is then set up again with backoff (librdkafka's default, 60 s, kept a
    consumer fetching from a leader frozen for 30 s until it woke: measured, README); a leader
    lost starts a metadata refresh at once; when no broker it knows answers, the client starts
    again from the bootstrap list (every node's address)."""
    return {
        "socket.connection.setup.timeout.ms": _ms(config.connect_timeout_s),
        "socket.timeout.ms": _ms(config.request_timeout_s),
        "reconnect.backoff.ms": _ms(config.reconnect.first_s),
        "reconnect.backoff.max.ms": _ms(config.reconnect.max_s),
        "retry.backoff.ms": RETRY_BACKOFF_MS,
        "retry.backoff.max.ms": RETRY_BACKOFF_MAX_MS,
        "topic.metadata.refresh.fast.interval.ms": METADATA_FAST_REFRESH_MS,
        "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
        "metadata.max.age.ms": 3 * METADATA_REFRESH_MS,
        "metadata.recovery.strategy": "rebootstrap",
    }


def _connection(config: ClientConfig) -> dict[str, Any]:
    return {
        "bootstrap.servers": config.url.removeprefix("kafka://"),
        "client.id": config.client_id,
        "log.connection.close": False,
        "logger": LOG,
    }


def _common(config: ClientConfig) -> dict[str, Any]:
    """What every client (producer, consumer, admin) is given."""
    return {**_connection(config), **failover_settings(config)}


def producer_settings(config: ClientConfig) -> dict[str, Any]:
    """The producer's librdkafka settings; ``config.acks`` overrides the profile's acks (the
    idempotent producer needs ``acks=all``: with fewer it is off, and retries may duplicate)."""
    safe = _safe(config.profile)
    acks = config.acks or ("all" if safe else "1")
    return {
        **_common(config),
        "acks": acks,
        "enable.idempotence": safe and acks == "all",
        "message.send.max.retries": 2147483647 if safe else 0,
        "message.timeout.ms": _ms(config.request_timeout_s),
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "delivery.report.only.error": True,  # success is the silence after flush()
    }


def consumer_settings(
    config: ClientConfig, group: str, in_transactions: bool = False
) -> dict[str, Any]:
    """The consumer's librdkafka settings. Under exactly-once it reads ``read_committed``
    (librdkafka's default, pinned: messages of aborted or open transactions are never handed
    out); ``in_transactions``: the consumer of a ``KafkaTransactionalSubscriber``, whose offsets
    are committed only inside its producer's transactions (no auto commit)."""
    safe = _safe(config.profile)
    exactly_once = config.profile is DeliveryProfile.EXACTLY_ONCE
    return {
        **_common(config),
        "group.id": group,
        "auto.offset.reset": "earliest",
        **({"isolation.level": "read_committed"} if exactly_once else {}),
        "enable.auto.commit": safe and not in_transactions,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 1000,
        "session.timeout.ms": _ms(config.session_timeout_s),
        "heartbeat.interval.ms": _ms(config.session_timeout_s / 4),
        "enable.partition.eof": False,
    }


def _address(config: ClientConfig) -> str:
    return str(_common(config)["bootstrap.servers"]).split(",")[0]


class _Topics:
    """Creates topics with the configured partitions on first use (once per topic)."""

    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        self._known: set[str] = set()
        self._admin: AdminClient | None = None

    def ensure(self, topic: str) -> None:
        if topic in self._known:
            return
        if self._admin is None:
            self._admin = AdminClient(_common(self._config))
        timeout = self._config.connect_timeout_s
        try:
            self._admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise ConnectError(NAME, _address(self._config), str(exc.args[0])) from exc
        future = self._admin.create_topics(
            # the broker's default.replication.factor (1 on a single node, 3 on kafka-cluster)
            [NewTopic(topic, self._config.partitions, -1)],
            request_timeout=timeout,
        )[topic]
        try:
            future.result(timeout=self._config.request_timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TransportError(f"{NAME}: cannot create topic {topic}: {exc}") from exc
        self._known.add(topic)


class _Outcome:
    """Delivery reports of one publish call: the ids not confirmed, failed or unknown."""

    __slots__ = ("failed", "unknown")

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.unknown: list[str] = []

    def add(self, mid: str, err: KafkaError) -> None:
        (self.unknown if err.code() in UNKNOWN_OUTCOME else self.failed).append(mid)


class _Report:
    """One message's delivery-report callback. A failed report carries no headers, so each
    callback knows its message's id. One small object per message: a ``functools.partial``
    is three, and those live until the flush, so the garbage collector ran three times as
    often (measured: ~40 ms of collections per 30 000 messages, 15-20 % of the publish)."""

    __slots__ = ("_mid", "_outcome")

    def __init__(self, outcome: _Outcome, mid: str) -> None:
        self._outcome = outcome
        self._mid = mid

    def __call__(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._outcome.add(self._mid, err)


class KafkaPublisher:
    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        self._producer = Producer(producer_settings(config))
        self._topics = _Topics(config)
        self._lock = threading.Lock()
        self._flush_timeout = config.request_timeout_s + 5

    def publish(self, topic: str, messages: Iterable[Message]) -> None:
        check_name("topic", topic)
        limit = self._config.max_payload_bytes
        with self._lock:
            self._topics.ensure(topic)
            outcome = _Outcome()
            produce = self._producer.produce
            poll = self._producer.poll
            shared: Mapping[str, str] = {}  # consecutive messages often carry equal headers:
            encoded: list[tuple[str, str | bytes | None]] = []  # encode them once
            for n, m in enumerate(messages, 1):
                if len(m.payload) > limit:
                    self._config.check_payload(len(m.payload))
                if not n & 1023:  # serve the reports that arrived: their callbacks are freed
                    poll(0)
                headers_dict = m[2]  # Message.headers is a fresh view of it on each access
                if headers_dict is not shared and headers_dict != shared:
                    shared = headers_dict
                    encoded = [(k, v.encode()) for k, v in shared.items()]
                headers = [(ID_HEADER, m.id.encode()), *encoded]
                while True:
                    try:
                        produce(
                            topic,
                            m.payload,
                            m.key,
                            headers=headers,
                            on_delivery=_Report(outcome, m.id),
                        )
                        break
                    except BufferError:  # the local queue is full: serve reports, then retry
                        poll(0.05)
            self._producer.flush(self._flush_timeout)
        if outcome.failed or outcome.unknown:
            raise PublishError(
                f"{NAME}: not confirmed on {topic}",
                failed=tuple(outcome.failed),
                unknown=tuple(outcome.unknown),
            )

    def close(self) -> None:
        with self._lock:
            self._producer.flush(self._flush_timeout)


class KafkaSubscriber(SubscriberBase):
    """Acks are cumulative per partition (Kafka's offsets are): the offset after the highest
    acked message is stored before the next fetch, but never past a nacked message still
    waiting for its redelivery. Stored offsets are committed every second and on close."""

    fetches_batches = True

    def __init__(self, config: ClientConfig, group: str, in_transactions: bool = False) -> None:
        super().__init__(group)
        self._config = config
        self._consumer = Consumer(consumer_settings(config, self._group, in_transactions))
        self._safe = _safe(config.profile)
        self._topic = ""
        self._acked: dict[int, int] = {}  # partition -> highest acked offset not yet stored
        self._acks: list[Any] = []  # acked messages, folded into _acked in order (hot path)
        self._held: dict[int, int] = {}  # partition -> a nacked offset: store nothing past it
        self._rewound: dict[int, int] = {}  # partition -> offset sought back to by a nack
        self._attempts: dict[tuple[int, int], int] = {}

    def _open(self, topic: str) -> None:
        self._topic = topic
        _Topics(self._config).ensure(topic)
        self._consumer.subscribe([topic], on_revoke=self._on_revoke)

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self._store_acked()  # still ours: what was acked gets committed with the revocation
        for tp in partitions:
            self._rewound.pop(tp.partition, None)
            self._held.pop(tp.partition, None)

    def _fold_acks(self) -> None:
        """Fold the acks made since the last fold, in order, into ``_acked`` (an ack of a
        nacked offset releases its hold)."""
        acks, self._acks = self._acks, []
        acked, held = self._acked, self._held
        for msg in acks:
            partition, offset = msg.partition(), msg.offset()
            if offset > acked.get(partition, -1):
                acked[partition] = offset
            if held and held.get(partition) == offset:
                del held[partition]

    def _store_acked(self) -> None:
        self._fold_acks()
        if not self._acked:
            return
        offsets = [
            TopicPartition(self._topic, p, min(o + 1, self._held.get(p, o + 1)))
            for p, o in self._acked.items()
        ]
        self._acked.clear()
        try:
            self._consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:  # a partition moved to another member meanwhile
            LOG.info("offsets not stored (%s): those messages are delivered again", exc)

    def _fetch(self, limit: int) -> list[Any]:
        """The next fetched messages still to be handed out (after folding the acks made since
        the last fetch), at once when some are there; empty after 0.2 s without any."""
        self._store_acked()
        consume = self._consumer.consume
        # consume(n, timeout) waits out the whole timeout unless n messages came (measured:
        # 10 ready messages took 1 s with a 1 s timeout): take what is there, else wait for
        # one message and take what came with it
        batch: list[Any] = consume(limit, 0)
        if not batch:
            first = self._consumer.poll(0.2)
            if first is None:
                return []
            batch = [first, *consume(limit - 1, 0)] if limit > 1 else [first]
        if not self._safe:
            self._commit_before_handling(batch)
        return batch

    def _fresh(self, msg: Any) -> int:
        """The attempt of a message fetched after a nack, or 0 when it is to be skipped (an
        error, or fetched before the nack's seek: it comes again)."""
        err = msg.error()
        if err is not None:
            self._raise_if_fatal(err)
            return 0
        partition, offset = msg.partition(), msg.offset()
        rewound = self._rewound.get(partition)
        if rewound is not None:
            if offset > rewound:
                return 0
            del self._rewound[partition]
        return self._attempts.pop((partition, offset), 0) + 1

    def _deliveries(self, topic: str) -> Iterator[Delivery | None]:
        decode, settle = _decode, self._settle
        while not self._closed.is_set():
            batch = self._fetch(self._config.prefetch)
            if not batch:
                yield None
                continue
            for msg in batch:
                if self._rewound or self._attempts:  # only after a nack
                    attempt = self._fresh(msg)
                    if attempt:
                        yield Delivery(decode(msg), topic, attempt, attempt > 1, settle, msg)
                elif msg.error() is None:
                    yield Delivery(decode(msg), topic, 1, False, settle, msg)
                else:
                    self._raise_if_fatal(msg.error())

    def _batches(self, topic: str, limit: int) -> Iterator[Batch | None]:
        """One Batch per fetch; its messages are decoded as they are read."""
        settle = self._settle_batch
        while not self._closed.is_set():
            batch = self._fetch(limit)
            if not batch:
                yield None
                continue
            if self._rewound or self._attempts or any(m.error() is not None for m in batch):
                attempts = [self._fresh(m) for m in batch]
                batch = [m for m, a in zip(batch, attempts, strict=True) if a]
                attempts = [a for a in attempts if a]
                if not batch:
                    continue
            else:
                attempts = [1] * len(batch)
            yield Batch(topic, _Decoded(batch), attempts, settle, batch)

    def _release(self) -> None:
        """Leave the group, committing stored offsets (a member that never polls would stall
        its group's rebalances)."""
        self._store_acked()
        self._consumer.close()

    def _commit_before_handling(self, batch: list[Any]) -> None:
        last: dict[int, int] = {}
        for msg in batch:
            if msg.error() is None:
                last[msg.partition()] = msg.offset()
        if last:
            topic = batch[0].topic()
            offsets = [TopicPartition(topic, p, o + 1) for p, o in last.items()]
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                raise TransportError(f"{NAME}: commit before handling failed: {exc}") from exc

    def _raise_if_fatal(self, err: KafkaError) -> None:
        if err.fatal():
            raise TransportError(f"{NAME}: fatal consumer error: {err.str()}")

    def _settle(self, d: Delivery, ok: bool, requeue: bool) -> None:
        if not self._safe:
            return
        if ok or not requeue:
            self._acks.append(d.token)  # folded before the next fetch, a nack or a revocation
            return
        self._rewind([d.token], [d.attempt])

    def _settle_batch(self, b: Batch, ok: bool, requeue: bool) -> None:
        if not self._safe:
            return
        if ok or not requeue:
            self._acks.extend(b.token)
            return
        self._rewind(b.token, b.attempts)

    def _rewind(self, msgs: list[Any], attempts: list[int]) -> None:
        """Have these messages delivered again: hold each partition's offsets below the
        earliest of them and seek back to it."""
        self._fold_acks()  # the earlier acks first: one may release a hold this nack sets
        earliest: dict[int, Any] = {}
        for msg, attempt in zip(msgs, attempts, strict=True):
            partition, offset = msg.partition(), msg.offset()
            self._attempts[(partition, offset)] = attempt
            if partition not in earliest or offset < earliest[partition].offset():
                earliest[partition] = msg
        for partition, msg in earliest.items():
            offset = msg.offset()
            self._held[partition] = min(offset, self._held.get(partition, offset))
            self._rewound[partition] = offset
            self._consumer.seek(TopicPartition(msg.topic(), partition, offset))


TRANSACTION_TIMEOUT_MS = 60_000
"""``transaction.timeout.ms`` (librdkafka's default, pinned): a transaction its producer left
open (a killed worker) is aborted by the coordinator after this, unless a producer with the
same ``transactional.id`` starts first, whose ``init_transactions`` aborts it at once.
Meanwhile ``read_committed`` readers of the partitions it wrote wait at its first offset."""
FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED}


def transactional_id(group: str, topic: str, instance: str) -> str:
    """The ``transactional.id`` of a group's instance consuming ``topic``: stable, so a restarted
    instance fences its predecessor; ``:`` cannot occur in names, so no two triples collide."""
    return f"msglab-eos:{group}:{topic}:{instance}"


def transactional_settings(config: ClientConfig, tid: str) -> dict[str, Any]:
    """The transactional producer's librdkafka settings: the exactly-once producer's
    (``acks=all``, idempotent) with ``transactional.id`` ``tid``."""
    return {
        **producer_settings(config),
        "transactional.id": tid,
        "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
    }


def _next_offsets(msgs: list[Any]) -> list[TopicPartition]:
    """Per partition of ``msgs``, the offset after its last: what the group resumes from."""
    last: dict[tuple[str, int], int] = {}
    for msg in msgs:
        key = (msg.topic(), msg.partition())
        last[key] = max(last.get(key, -1), msg.offset())
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


COMMIT_GRACE_S = 5.0  # past its calls' own timeouts, a commit is taken as hung (librdkafka #5456)


class KafkaTransactionalSubscriber(KafkaSubscriber):
    """``ports.TransactionalSubscriber`` on Kafka: a ``read_committed`` consumer that never
    commits by itself, and a transactional producer (``transactional.id`` from
    ``transactional_id``) whose ``init_transactions`` runs before the group is joined: a
    predecessor with the same id has its open transaction aborted and is fenced.

    ``commit`` calls ``send_offsets_to_transaction(offsets after the batch, the consumer's group
    metadata)`` then ``commit_transaction``; the group metadata carries the member's
    generation, so a member that lost its partitions in a rebalance cannot commit offsets for
    them (KIP-447). librdkafka sorts errors in three: *abortable* (``txn_requires_abort``): the
    transaction is aborted and the batch rewound (``TransactionAborted``); *fatal*:
    ``FencedError`` when fenced, else TransportError; anything else (a timeout, a retriable
    error) leaves the outcome of the commit unknown: it is neither retried nor aborted (an
    abort after a commit that timed out is how KAFKA-17754 tears transactions) but raised as
    a TransportError, so the caller builds a new subscriber, whose producer's
    ``init_transactions`` settles that transaction under a new epoch and whose consumer resumes
    from the group's committed offsets, whichever way it went.

    Kafka does not move a consumer back when a transaction aborts (KAFKA-17582: intended);
    ``abort`` and an aborted ``commit`` seek each partition back to the batch's first offset,
    and the batch comes again with each message's attempt + 1 (counted in this process)."""

    def __init__(self, config: ClientConfig, group: str, instance: str) -> None:
        if config.profile is not DeliveryProfile.EXACTLY_ONCE:
            raise UsageError(f"{NAME}: a transactional subscriber needs profile exactly-once")
        super().__init__(config, group, in_transactions=True)
        self._instance = check_name("instance", instance)
        self._tid = ""
        self._producer: Producer | None = None
        self._outputs = _Topics(config)
        self._open_txn = False
        self._call_s = 3 * config.request_timeout_s  # init may wait for a predecessor's commit

    # -- the consumer side ------------------------------------------------------------------

    def subscribe(self, topic: str) -> Iterator[Delivery]:
        raise UsageError(f"{NAME}: a transactional subscriber hands out batches (batches())")

    def _open(self, topic: str) -> None:
        self._tid = transactional_id(self._group, topic, self._instance)
        producer = Producer(transactional_settings(self._config, self._tid))
        try:
            producer.init_transactions(self._call_s)
        except KafkaException as exc:
            raise self._failure("init_transactions", exc) from exc
        self._producer = producer
        super()._open(topic)

    def _fetch(self, limit: int) -> list[Any]:
        if self._open_txn:
            raise UsageError(f"{NAME}: commit or abort the batch before fetching the next")
        return super()._fetch(limit)

    def _settle_batch(self, b: Batch, ok: bool, requeue: bool) -> None:
        raise UsageError(f"{NAME}: settle a transactional batch with commit() or abort()")

    def _release(self) -> None:
        """Leave the group (nothing is committed: offsets go through transactions only), then
        close the producer, which aborts a transaction still open. A producer fenced or failed
        for good raises its error again on close: it is logged, the close goes on."""
        try:
            super()._release()
        finally:
            producer, self._producer = self._producer, None
            if producer is not None:
                try:
                    producer.close()
                except KafkaException as exc:
                    LOG.info("%s: transactional producer closed after: %s", self._tid, exc)

    # -- the transaction ----------------------------------------------------------------------

    def _txn(self) -> Producer:
        if self._producer is None:
            raise UsageError(f"{NAME}: call batches() first: no transactional producer yet")
        return self._producer

    def begin(self) -> None:
        try:
            self._txn().begin_transaction()
        except KafkaException as exc:
            raise self._failure("begin_transaction", exc) from exc
        self._open_txn = True

    def publish(self, topic: str, messages: Iterable[Message]) -> None:
        """Queue ``messages`` in the open transaction (confirmed by ``commit``)."""
        check_name("topic", topic)
        producer = self._txn()
        if not self._open_txn:
            raise UsageError(f"{NAME}: publish inside a transaction: call begin() first")
        self._outputs.ensure(topic)
        for m in messages:
            self._config.check_payload(len(m.payload))
            headers: list[tuple[str, str | bytes | None]] = [(ID_HEADER, m.id.encode())]
            headers += [(k, v.encode()) for k, v in m.headers.items()]
            while True:
                try:
                    producer.produce(topic, m.payload, m.key, headers=headers)
                    break
                except BufferError:  # the local queue is full: let it drain, then retry
                    producer.poll(0.05)
                except KafkaException as exc:
                    raise self._failure(f"produce to {topic}", exc) from exc

    def commit(self, batch: Batch) -> None:
        """Commit the batch's outputs with its offsets. The two calls run on a thread of their
        own, given ``_call_s`` and a grace in all: librdkafka's ``send_offsets_to_transaction``
        ignores its timeout when the group coordinator went away (librdkafka #5456, measured
        here with a broker SIGKILLed under a transaction: blocked for good). Past that the
        producer is abandoned where it hangs (never touched again: ``_release`` skips it) and a
        TransportError raised: the caller's next subscriber, same ``transactional.id``, fences
        it and aborts its transaction."""
        producer = self._txn()
        offsets = _next_offsets(batch.token)
        metadata = self._consumer.consumer_group_metadata()
        outcome: dict[str, Any] = {"what": "send_offsets_to_transaction"}
        returned = threading.Event()

        def run() -> None:
            try:
                producer.send_offsets_to_transaction(offsets, metadata, self._call_s)
                outcome["what"] = "commit_transaction"
                producer.commit_transaction(self._call_s)
            except KafkaException as exc:
                outcome["error"] = exc
            finally:
                returned.set()

        # a daemon thread per commit (tens of us beside a commit's milliseconds): an executor's
        # worker would be joined at interpreter exit, and a hung one would never let go
        threading.Thread(target=run, name=f"commit-{self._tid}", daemon=True).start()
        if not returned.wait(self._call_s + COMMIT_GRACE_S):
            self._producer, self._open_txn = None, False  # hung: left alone, fenced by the next
            raise TransportError(
                f"{NAME}: {outcome['what']} ({self._tid}) did not return within "
                f"{self._call_s + COMMIT_GRACE_S:.0f}s (librdkafka #5456: it can wait for a "
                "group coordinator that went away past its timeout); producer abandoned"
            )
        what, exc = outcome["what"], outcome.get("error")
        if exc is not None:
            err: KafkaError = exc.args[0]
            if err.fatal() or not err.txn_requires_abort():
                raise self._failure(what, exc) from exc  # the subscriber is done with
            self._abort_and_rewind(batch)
            raise TransactionAborted(
                f"{NAME}: {what} failed ({err.str()}); transaction aborted, "
                f"{len(batch)} message(s) come again"
            ) from exc
        self._open_txn = False

    def abort(self, batch: Batch) -> None:
        self._abort_and_rewind(batch)

    def _abort_and_rewind(self, batch: Batch) -> None:
        try:
            self._txn().abort_transaction(self._call_s)
        except KafkaException as exc:
            raise self._failure("abort_transaction", exc) from exc
        self._open_txn = False
        try:
            self._rewind(batch.token, batch.attempts)
        except KafkaException as exc:  # a partition no longer assigned (lost in a rebalance)
            raise TransportError(f"{NAME}: cannot rewind after an abort: {exc}") from exc

    def _failure(self, what: str, exc: KafkaException) -> TransportError:
        """A TransportError for a failed transactional call (FencedError when fenced); after
        it the subscriber is only good for ``close``: its transaction's state is unknown."""
        err: KafkaError = exc.args[0]
        text = f"{NAME}: {what} ({self._tid}): {err.str()}"
        self._open_txn = False  # unknown: the next subscriber's init_transactions settles it
        if err.code() in FENCED:
            return FencedError(f"{text}: a newer instance with this transactional.id runs")
        kind = "fatal" if err.fatal() else "retriable" if err.retriable() else "outcome unknown"
        return TransportError(f"{text} ({kind}): build a new subscriber")


def _decode(msg: Any) -> Message:
    headers = {k: v.decode() if v is not None else "" for k, v in msg.headers() or ()}
    mid = headers.pop(ID_HEADER, "") or f"{msg.topic()}:{msg.partition()}:{msg.offset()}"
    key = msg.key()
    return Message.unchecked(
        msg.value() or b"", key.decode() if key is not None else None, headers, mid
    )


class _Decoded(Sequence[Message]):
    """A fetched batch's messages, decoded one by one as they are read."""

    __slots__ = ("_raw",)

    def __init__(self, raw: list[Any]) -> None:
        self._raw = raw

    def __len__(self) -> int:
        return len(self._raw)

    @overload
    def __getitem__(self, index: int) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> list[Message]: ...

    def __getitem__(self, index: int | slice) -> Message | list[Message]:
        if isinstance(index, slice):
            return [_decode(m) for m in self._raw[index]]
        return _decode(self._raw[index])

    def __iter__(self) -> Iterator[Message]:
        new = tuple.__new__
        for msg in self._raw:  # _decode, inlined: map(_decode, ...) was 10-18 % slower
            headers = {k: v.decode() if v is not None else "" for k, v in msg.headers() or ()}
            mid = headers.pop(ID_HEADER, "") or f"{msg.topic()}:{msg.partition()}:{msg.offset()}"
            key = msg.key()
            key = key.decode() if key is not None else None
            yield new(Message, (msg.value() or b"", key, headers, mid))  # = Message.unchecked


class KafkaTransport:
    name = NAME
    stores_messages = True

    def __init__(self, config: ClientConfig) -> None:
        self.config = config

    def publisher(self) -> Publisher:
        return KafkaPublisher(self.config)

    def subscriber(self, group: str) -> Subscriber:
        return KafkaSubscriber(self.config, group)

    def transactional(self, group: str, instance: str) -> TransactionalSubscriber:
        """``ports.TransactionalTransport``: a ``KafkaTransactionalSubscriber`` (profile
        exactly-once only, else UsageError)."""
        return KafkaTransactionalSubscriber(self.config, group, instance)

    def delete_topic(self, topic: str, groups: Iterable[str]) -> None:
        admin = AdminClient(_common(self.config))
        futures = admin.delete_topics([topic], request_timeout=self.config.request_timeout_s)
        for future in futures.values():
            try:
                future.result(timeout=self.config.request_timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise TransportError(f"{NAME}: cannot delete topic {topic}: {exc}") from exc

    def lag(self, topic: str, group: str) -> list[Lag]:
        """Per partition: the high watermark (end offset) minus the group's committed offset
        (the log start when it committed nothing: it starts at the earliest offset). Kafka
        keeps only committed offsets, so a delivered message not yet committed cannot be told
        from one not delivered (``ready`` and ``unacked`` are None), and an acked one counts
        until the next commit (every second and on close). Read with a consumer of the group
        that never joins it: nothing is committed."""
        return group_lag(self.config, topic, group)

    @classmethod
    def client_settings(cls, config: ClientConfig) -> dict[str, str]:
        """What ``msglab run --set`` turns in the clients built from ``config``: ``acks``, as
        the producer is given it."""
        return {"acks": str(producer_settings(config)["acks"])}

    @classmethod
    def profile_settings(cls) -> dict[str, dict[str, str]]:
        """The settings every client gets (``client``, ``failover``: shown once), then the
        producer's and the consumer's own, as the clients are built with them."""
        out: dict[str, dict[str, str]] = {}
        profiles = (
            DeliveryProfile.AT_MOST_ONCE,
            DeliveryProfile.AT_LEAST_ONCE,
            DeliveryProfile.EXACTLY_ONCE,
        )
        for profile in profiles:
            cfg = ClientConfig(url="BOOTSTRAP", profile=profile)
            common = _common(cfg)
            failover = failover_settings(cfg)
            settings = {
                f"client {k}": str(v)
                for k, v in common.items()
                if k not in failover and k != "logger"
            }
            settings |= {f"failover {k}": str(v) for k, v in failover.items()}
            producer, consumer = producer_settings(cfg), consumer_settings(cfg, "G")
            roles: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
                ("producer", producer, common),
                ("consumer", consumer, common),
            ]
            if profile is DeliveryProfile.EXACTLY_ONCE:  # an App consumer's: what differs
                tid = transactional_id("G", "T", "I")
                roles += [
                    ("pipeline producer", transactional_settings(cfg, tid), producer),
                    ("pipeline consumer", consumer_settings(cfg, "G", True), consumer),
                ]
            for role, built, base in roles:
                settings |= {
                    f"{role} {k}": str(v)
                    for k, v in built.items()
                    if k not in common and (base is common or base.get(k) != v)
                }
            settings["consumer offsets"] = {
                DeliveryProfile.AT_MOST_ONCE: "batch committed synchronously before it is handled",
                DeliveryProfile.AT_LEAST_ONCE: (
                    "stored after the handler acked; committed every 1 s and on close"
                ),
                DeliveryProfile.EXACTLY_ONCE: (
                    "consumer: as at-least-once, reading read_committed; pipeline consumer: "
                    "committed only in the pipeline producer's transaction with what it "
                    "produced (send_offsets_to_transaction), rewound on abort"
                ),
            }[profile]
            settings["server"] = (
                "KRaft, RF 1; fsync per log.flush.interval.messages (default: never; the page "
                "cache survives a process kill)"
            )
            out[profile.value] = settings
        return out


def group_lag(config: ClientConfig, topic: str, group: str) -> list[Lag]:
    """``KafkaTransport.lag``: one Lag per partition of ``topic``, in partition order."""
    check_name("topic", topic)
    consumer = Consumer(consumer_settings(config, check_name("group", group)))
    try:
        try:
            meta = consumer.list_topics(timeout=config.connect_timeout_s)
        except KafkaException as exc:
            raise ConnectError(NAME, _address(config), str(exc.args[0])) from exc
        if topic not in meta.topics:
            raise UsageError(f"{NAME}: no topic {topic!r}")
        tps = [TopicPartition(topic, p) for p in sorted(meta.topics[topic].partitions)]
        wait = config.request_timeout_s
        try:
            committed = consumer.committed(tps, timeout=wait)
            marks = [consumer.get_watermark_offsets(tp, timeout=wait, cached=False) for tp in tps]
        except KafkaException as exc:
            raise TransportError(f"{NAME}: lag of {group} on {topic}: {exc}") from exc
        pairs = zip(committed, marks, strict=True)
        return [partition_lag(tp.partition, tp.offset, *mark) for tp, mark in pairs]
    finally:
        consumer.close()


def partition_lag(partition: int, committed: int, low: int, high: int) -> Lag:
    """A partition's Lag from its committed offset (negative: none) and its watermarks."""
    start = committed if committed >= 0 else low
    details: dict[str, int | str] = {"committed": committed if committed >= 0 else "none"}
    details |= {"log-start": low, "end": high}
    return Lag(str(partition), max(0, high - max(start, low)), details=details, note=LAG_NOTE)


LAG_NOTE = (
    "lag: end offset - committed offset (the log start when none is); Kafka stores committed "
    "offsets only, so ready and unacked are unknown, and an ack counts until its commit (1 s)"
)


# -- raw-client baselines for `msglab bench` (same settings, no msglab in the loop) -----------


def _raw_publish(config: ClientConfig, topic: str, messages: list[Message]) -> tuple[int, float]:
    producer = Producer(producer_settings(config))
    errors: list[KafkaError] = []

    def report(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    producer.produce(topic, messages[0].payload, messages[0].key, on_delivery=report)
    producer.flush(config.request_timeout_s + 5)  # connected, producer id acquired
    began = time.perf_counter()
    for m in messages[1:]:
        headers: list[tuple[str, str | bytes | None]] = [(ID_HEADER, m.id.encode())]
        headers += [(k, v.encode()) for k, v in m.headers.items()]
        while True:
            try:
                producer.produce(topic, m.payload, m.key, headers=headers, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(config.request_timeout_s + 5)
    seconds = time.perf_counter() - began
    if errors:
        raise TransportError(f"raw producer: {len(errors)} failed: {errors[0]}")
    return len(messages) - 1, seconds


def _raw_consume(
    config: ClientConfig,
    topic: str,
    group: str,
    count: int,
    idle_s: float,
    ready: threading.Event | None = None,
) -> tuple[int, float]:
    consumer = Consumer(consumer_settings(config, group))
    consumer.subscribe([topic])
    if ready is not None:
        ready.set()
    safe = _safe(config.profile)
    got, first, last = 0, 0.0, time.monotonic()
    try:
        while got < count and time.monotonic() - last < idle_s:
            batch: list[Any] = consumer.consume(config.prefetch, 0.2)
            for msg in batch:
                if msg.error() is None:
                    # what an application does with each message: read payload, key, headers
                    _payload, key = msg.value(), msg.key()
                    _key = key.decode() if key is not None else None
                    _headers = {k: v.decode() for k, v in msg.headers() or ()}
                    got += 1
                    last = time.monotonic()
                    first = first or last
                    if safe:
                        consumer.store_offsets(msg)
    finally:
        consumer.close()
    return got, last - first


def raw_publishers(profile: DeliveryProfile) -> dict[str, RawPublish]:
    """The raw client doing the publish job with the same settings."""
    return {"confluent-kafka producer": _raw_publish}


RAW_CONSUMERS: dict[str, RawConsume] = {"confluent-kafka consumer": _raw_consume}
