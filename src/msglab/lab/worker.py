"""Producer, consumer, replayer, storage reader and relay processes of a lab run (separate OS
processes: faults kill them).

``python -m msglab.lab.worker producer|consumer|replayer|storage|relay NAME RUN_ID``, the spec
on standard input. A producer records, per message, a ``sending`` line before it sends and an
outcome line (``ok``, ``fail``, ``unknown``) after; under at-least-once it retries what was not
confirmed, with the same id. What "sent" means is the pattern's: ``direct``, the broker
confirmed the publish; ``dual-write`` and ``outbox``, the business transaction committed (then
the producer publishes itself, or the outbox relay does). A consumer records each delivery,
applies the effect (a row in PostgreSQL; under effectively-once through the idempotent
consumer), then acks: evidence before effect before ack, so a killed worker leaves everything
the checker needs. A replayer reads as a second group (the topic after the run or alongside
it, or the replies of a request-reply run), recording what it gets, with no effect; a storage
reader likewise reads, after a durability fault, what the broker kept. A relay publishes the
run's outbox rows.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as q  # a JSON string literal, fast
from pathlib import Path
from typing import Any

from msglab.brokers import open_transport
from msglab.config import Backoff, ClientConfig
from msglab.consumers.idempotent import IdempotentConsumer
from msglab.errors import PublishError, TransportError
from msglab.lab import effects
from msglab.lab.evidence import DELIVERIES, FAULTS, REPLAYS, SENDS, STORED, Ledger
from msglab.lab.scenario import RELAY_BATCH
from msglab.message import Delivery, Message
from msglab.outbox import Relay
from msglab.ports import Publisher
from msglab.profiles import DeliveryProfile
from msglab.subscription import BATCH_WAIT_S

# messages per publish call when the rate is unbounded: the bench publishes its whole batch in
# one call, and each call waits for the broker's last acks; 20 000 rather than 5 000 raised the
# Kafka lab publish rate from a median 65k to 76k msgs/s (4 alternating runs of 60 000), and a
# run of up to 100 000 now waits once
UNBOUNDED_BATCH = 100_000
RETRY_FOR_S = 30.0  # an at-least-once producer retries a batch this long at most
GIVE_UP_AFTER_S = 45.0  # with nothing confirmed for this long, the producer stops sending
GROUP = "lab"  # the consumer group of every lab run
REPLAY_GROUP = "lab-replay"  # the second group: replay, fanout, request-reply (its replies)
STORAGE_GROUP = "lab-stored"  # reads, after the run, what the broker kept (durability faults)
SENT_HEADER = "sent"  # the producer's clock when the batch was built (epoch seconds)
EFFECT_BATCH = 100  # messages per batch at most, one effect transaction (prefetch: 200)


@dataclass(frozen=True)
class WorkerSpec:
    role: str  # producer | consumer
    name: str  # p0, c1 ...
    run_id: str
    run_dir: str
    transport: str
    url: str = field(repr=False)  # with its password: never logged
    profile: str
    pattern: str = "direct"  # direct | dual-write | outbox | cdc
    db_url: str = field(default="", repr=False)  # PostgreSQL: effects, business rows, the outbox
    # producer
    first: int = 0  # this producer's messages: seq first .. first + count - 1
    count: int = 0
    keys: int = 8
    size: int = 100
    rate: float = 0.0  # this producer's messages per second (0: unbounded)
    seed: int = 1
    die_after_commits: int = 0  # producer-kill (dual-write, outbox): SIGKILL self after this
    # many messages committed, before publishing them
    # relay
    die_after_relayed: int = 0  # relay-kill: SIGKILL self when this many were relayed, midway
    # consumer
    die_after_effects: int = 0  # consumer-kill: SIGKILL self after this many effects
    slow_ms: float = 0.0
    # request-reply: consumers answer on reply_topic_of(run_id), where the replayer reads
    replies: bool = False
    client_sets: dict[str, str] = field(default_factory=dict)  # ClientConfig fields (--set)

    def config(self) -> ClientConfig:
        return ClientConfig(
            url=self.url,
            profile=DeliveryProfile.parse(self.profile).delivery,
            connect_timeout_s=3.0,
            request_timeout_s=10.0,
            reconnect=Backoff(attempts=20, first_s=0.2, max_s=2.0),
            claim_idle_s=3.0,
            session_timeout_s=6.0,
            prefetch=200,
        ).with_fields(self.client_sets)


def produce(spec: WorkerSpec) -> None:
    run_dir = Path(spec.run_dir)
    sends = Ledger(run_dir, SENDS, spec.name)
    transport = open_transport(spec.transport, spec.config())
    pub = transport.publisher()
    # connect and look up the topic before the first send (as `msglab bench` does); a broker
    # that is away now is recorded by the first sends
    topic = topic_of(spec.run_id)
    with contextlib.suppress(TransportError):
        pub.publish(topic, [])
    retry = spec.profile != "at-most-once"
    db = effects.engine(spec.db_url) if spec.pattern != "direct" else None
    attempt = _publish(pub, topic) if db is None else _commit(db, spec, topic)
    rng = random.Random(f"{spec.seed}-{spec.name}")
    payload = bytes(rng.getrandbits(8) for _ in range(spec.size))
    size = max(1, int(spec.rate * 0.02)) if spec.rate else UNBOUNDED_BATCH  # 20 ms of load
    interval = size / spec.rate if spec.rate else 0.0
    next_at = time.monotonic()
    progress = _Progress()
    prefix = f"{spec.run_id}-{spec.name}-"
    keys = [f"k{i}" for i in range(spec.keys)]
    # each message's send lines share their middle, up to the outcome's value
    quoted_prefix, quoted_keys = q(prefix)[:-1], [q(k) for k in keys]
    for start in range(0, spec.count, size):
        if progress.stalled():
            break  # the broker confirms nothing any more: the rest is never sent
        if interval:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
        headers = {SENT_HEADER: repr(time.time())}  # shared by the batch (read-only)
        batch = []
        for seq in range(start, min(start + size, spec.count)):
            k = (spec.first + seq) % spec.keys
            batch.append(
                (
                    Message.unchecked(payload, keys[k], headers, f"{prefix}{seq}"),
                    f'"seq":{seq},"id":{quoted_prefix}{seq}","key":{quoted_keys[k]},"outcome":',
                )
            )
        confirmed = _sends(attempt, batch, sends, spec, retry, progress)
        if db is not None:
            _after_commit(pub, spec, topic, confirmed, progress)
    pub.close()
    sends.close()


class _Progress:
    """When the producer last had a message confirmed."""

    def __init__(self) -> None:
        self.last_ok = time.monotonic()
        self.committed = 0  # messages whose business transaction committed (dual-write, outbox)

    def stalled(self) -> bool:
        return time.monotonic() - self.last_ok > GIVE_UP_AFTER_S


Attempt = Callable[[list[Message]], dict[str, str]]
"""Sends messages once; the outcome (``fail`` or ``unknown``) of each id not confirmed."""


def _sends(
    attempt: Attempt,
    batch: list[tuple[Message, str]],
    sends: Ledger,
    spec: WorkerSpec,
    retry: bool,
    progress: _Progress,
) -> list[Message]:
    """Send (message, send-line middle) pairs with ``attempt``, recording each try and its
    outcome; under at-least-once retry what was not confirmed until RETRY_FOR_S. The messages
    confirmed."""
    pending = batch
    confirmed: list[Message] = []
    deadline = time.monotonic() + RETRY_FOR_S
    tries = 0
    producer = q(spec.name)
    while pending:
        tries += 1
        head = f'{{"sent_ts":{time.time()!r},"producer":{producer},'
        sends.write_lines(
            "".join(f'{head}{body}"sending","try":{tries}}}\n' for _, body in pending)
        )
        outcome = attempt([m for m, _ in pending])
        tail = f',"try":{tries},"ts":{time.time()!r}}}\n'
        sends.write_lines(
            "".join(f'{head}{body}"{outcome.get(m.id, "ok")}"{tail}' for m, body in pending)
        )
        if len(outcome) < len(pending):
            progress.last_ok = time.monotonic()
        confirmed += [m for m, _ in pending if m.id not in outcome]
        pending = [(m, body) for m, body in pending if m.id in outcome]
        if not retry or time.monotonic() > deadline or progress.stalled():
            break
        if pending:
            time.sleep(0.3)
    return confirmed


def _publish(pub: Publisher, topic: str) -> Attempt:
    """direct: a send is a publish, confirmed by the broker as the profile requires."""

    def attempt(messages: list[Message]) -> dict[str, str]:
        try:
            pub.publish(topic, messages)
        except PublishError as exc:
            return {**{i: "fail" for i in exc.failed}, **{i: "unknown" for i in exc.unknown}}
        except TransportError:  # not connected: nothing of this batch was sent
            return {m.id: "fail" for m in messages}
        return {}

    return attempt


def _commit(db: Any, spec: WorkerSpec, topic: str) -> Attempt:
    """dual-write, outbox, cdc: a send is the business transaction (a ``lab_orders`` row per
    message, and under outbox and cdc the messages in the outbox table), ``ok`` once
    committed; a retry stores each id once."""
    outbox = spec.pattern != "dual-write"

    def attempt(messages: list[Message]) -> dict[str, str]:
        outcome = effects.commit_orders(db, spec.run_id, topic, messages, outbox)
        return {} if outcome == "ok" else {m.id: outcome for m in messages}

    return attempt


def _after_commit(
    pub: Publisher, spec: WorkerSpec, topic: str, committed: list[Message], progress: _Progress
) -> None:
    """producer-kill: die between the commit and the publish once ``die_after_commits`` are
    committed; dual-write then publishes what was committed itself (the relay or Debezium
    publishes the outbox's)."""
    progress.committed += len(committed)
    if spec.die_after_commits and progress.committed >= spec.die_after_commits:
        step = "before publishing" if spec.pattern == "dual-write" else "the relay publishes"
        _die(spec, "producer-kill", f"after commit {progress.committed}, {step}")
    if spec.pattern == "dual-write" and committed:
        _publish_after_commit(pub, topic, committed, spec.profile != "at-most-once")


def _publish_after_commit(pub: Publisher, topic: str, messages: list[Message], retry: bool) -> None:
    """dual-write's second write: publish what was committed; under at-least-once retry what
    was not confirmed for RETRY_FOR_S, else give it up (the message is lost, the row stays)."""
    deadline = time.monotonic() + RETRY_FOR_S
    while messages:
        try:
            pub.publish(topic, messages)
            return
        except PublishError as exc:
            left = set(exc.failed) | set(exc.unknown)
            messages = [m for m in messages if m.id in left]
        except TransportError:
            pass
        if not retry or time.monotonic() > deadline:
            print(f"dual-write: {len(messages)} committed messages not published", flush=True)
            return
        time.sleep(0.3)


def _die(spec: WorkerSpec, fault: str, detail: str) -> None:
    """SIGKILL this worker, after recording the fault (``faults-<name>.jsonl``)."""
    Ledger(Path(spec.run_dir), FAULTS, spec.name).write(
        {
            "ts": time.time(),
            "fault": fault,
            "action": "kill",
            "target": spec.name,
            "pid": os.getpid(),
            "detail": detail,
        }
    )
    os.kill(os.getpid(), signal.SIGKILL)


def relay(spec: WorkerSpec) -> None:
    """Publish the run's outbox rows until SIGTERM (``msglab.outbox.Relay``): marks after the
    broker's confirm, or first under at-most-once. relay-kill: SIGKILL self midway through the
    pass that reaches ``die_after_relayed`` (published and not marked, or marked and not
    published)."""
    db = effects.engine(spec.db_url)
    pub = open_transport(spec.transport, spec.config()).publisher()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    relayed = 0

    def midway(ids: list[str]) -> None:
        nonlocal relayed
        relayed += len(ids)
        if spec.die_after_relayed and relayed >= spec.die_after_relayed:
            step = "marked, not yet published" if first else "published, not yet marked"
            _die(spec, "relay-kill", f"midway through a pass of {len(ids)}: {step}")

    first = spec.profile == "at-most-once"
    Relay(
        db,
        pub,
        batch_size=RELAY_BATCH,
        mark_first=first,
        topics=[topic_of(spec.run_id)],
        midway=midway,
    ).run(stop)
    pub.close()


def topic_of(run_id: str) -> str:
    """The topic of a lab run; its consumers form the group ``GROUP``."""
    return f"lab-{run_id}"


def reply_topic_of(run_id: str) -> str:
    """Where the consumers of a request-reply run answer (one reply per message, same id)."""
    return f"lab-{run_id}-replies"


def consume(spec: WorkerSpec) -> None:
    run_dir = Path(spec.run_dir)
    deliveries = Ledger(run_dir, DELIVERIES, spec.name)
    db = effects.engine(spec.db_url)
    transport = open_transport(spec.transport, spec.config())
    sub = transport.subscriber(GROUP)
    signal.signal(signal.SIGTERM, lambda *_: sub.close())  # graceful: ends the iteration
    replier = transport.publisher() if spec.replies else None
    dedup = None
    if spec.profile == "effectively-once":
        dedup = IdempotentConsumer(db, f"{GROUP}-{spec.run_id}", effects.RETRY)
    handler = _BatchHandler(spec, deliveries, db, dedup, replier)
    topic = topic_of(spec.run_id)
    if getattr(sub, "fetches_batches", False):  # one fetch is one batch, handed out at once
        batches = sub.batches(topic, EFFECT_BATCH)
        _ready(spec)
        for batch in batches:
            handler.handle(list(batch.messages), batch.attempts, None, batch.ack)
    else:  # the broker pushes one at a time: each is on record as it arrives
        grouped = _Grouped(handler)
        sub.on_idle(grouped.flush)
        stream = sub.subscribe(topic)
        _ready(spec)
        for d in stream:
            grouped.add(d)
    if replier is not None:
        replier.close()
    deliveries.close()


def _ready(spec: WorkerSpec) -> None:
    """Tell the orchestrator the subscription exists (``ready-<name>``)."""
    (Path(spec.run_dir) / f"ready-{spec.name}").write_text("subscribed\n")


class _BatchHandler:
    """Handles messages together, as a batch consumer does: a delivery line per message,
    flushed; the effects in one committed transaction; the replies (request-reply); then the
    ack. Evidence before effect before ack. A batch the subscription closes on is neither
    applied nor acked: it comes again. A batch is what the subscriber fetched at once
    (``Subscriber.batches`` where the broker fetches in batches), or single deliveries grouped
    by ``_Grouped`` where the broker pushes them one at a time."""

    def __init__(
        self,
        spec: WorkerSpec,
        deliveries: Ledger,
        db: Any,
        dedup: IdempotentConsumer | None,
        replier: Publisher | None,
    ) -> None:
        self._spec = spec
        self._replier = replier
        self._ledger = deliveries
        self._db = db
        self._dedup = dedup
        self._consumer = q(spec.name)
        self._applied = 0
        self._kill_at = spec.die_after_effects  # consumer-kill: after exactly this many effects
        self.slow_ms = spec.slow_ms

    def kill_due(self, more: int) -> bool:
        """True when ``more`` messages would reach the consumer-kill point."""
        return bool(self._kill_at) and self._applied + more >= self._kill_at

    def handle(
        self,
        messages: list[Message],
        attempts: list[int],
        arrived: list[float] | None,
        ack: Callable[[], None],
    ) -> None:
        """``arrived``: each message's arrival time (None: they arrived together, now)."""
        if self.kill_due(len(messages)):
            # consumer-kill: the handler gets as far as the kill_at-th message; the rest is
            # never handed to it (not recorded, no effect), as in a consumer that handles a
            # batch one message after another and dies there
            messages = messages[: self._kill_at - self._applied]
        lines = []
        now = time.time()
        head = f',"consumer":{self._consumer},"id":'
        for i, (m, attempt) in enumerate(zip(messages, attempts, strict=False)):
            if arrived is not None:
                now = arrived[i]
            elif self._spec.slow_ms:  # slow-consumer: each message takes slow_ms
                time.sleep(self._spec.slow_ms / 1000)
                now = time.time()
            producer, seq = _id_parts(m.id)
            lines.append(
                f'{{"ts":{now!r}{head}{q(m.id)},"attempt":{attempt},'
                f'"redelivered":{"true" if attempt > 1 else "false"},'
                f'"key":{_q_or_null(m.key)},"producer":{_q_or_null(producer)},'
                f'"seq":{_q_or_null(seq)}}}\n'
            )
        self._ledger.write_lines("".join(lines))  # on record before their effects
        effects.apply(self._db, self._spec.run_id, self._spec.name, messages, self._dedup)
        if self._replier is not None:  # request-reply: answered after the effect, before the ack
            self._replier.publish(
                reply_topic_of(self._spec.run_id),
                [Message(b"", m.key, id=m.id) for m in messages],
            )
        self._applied += len(messages)
        if self._kill_at and self._applied >= self._kill_at:
            _die(self._spec, "consumer-kill", f"after effect {self._applied}, before its ack")
        ack()


class _Grouped:
    """Pushed deliveries grouped for ``_BatchHandler``: each is timed as it arrives (and takes
    ``slow_ms`` there under slow-consumer); a group is handled once it holds EFFECT_BATCH, once
    BATCH_WAIT_S passed since its first, once the kill point is reached, or when the stream
    goes idle (``flush``, the subscriber's on_idle hook). Each delivery is acked after."""

    def __init__(self, handler: _BatchHandler) -> None:
        self._handler = handler
        self._held: list[Delivery] = []
        self._arrived: list[float] = []

    def add(self, d: Delivery) -> None:
        if self._handler.slow_ms:
            time.sleep(self._handler.slow_ms / 1000)
        self._held.append(d)
        self._arrived.append(time.time())
        if (
            len(self._held) >= EFFECT_BATCH
            or self._arrived[-1] - self._arrived[0] >= BATCH_WAIT_S
            or self._handler.kill_due(len(self._held))
        ):
            self.flush()

    def flush(self) -> None:
        if not self._held:
            return
        held, arrived = self._held, self._arrived
        self._held, self._arrived = [], []

        def ack_each() -> None:
            for d in held:
                d.ack()

        self._handler.handle(
            [d.message for d in held], [d.attempt for d in held], arrived, ack_each
        )


def _id_parts(mid: str) -> tuple[str | None, str | None]:
    """Producer and seq of a lab message id ``<run>-<producer>-<seq>`` (None, None for an
    id that is not a lab id)."""
    parts = mid.rsplit("-", 2)
    if len(parts) == 3 and parts[2].isdigit():
        return parts[1], parts[2]
    return None, None


def _q_or_null(value: str | None) -> str:
    return "null" if value is None else q(value)


def replay(spec: WorkerSpec) -> None:
    """Read the run's topic (or its replies) as a second group (``REPLAY_GROUP``): a line per
    delivery in ``replays-<name>.jsonl``, acked, no effect."""
    _read_as(spec, REPLAY_GROUP, REPLAYS)


def read_stored(spec: WorkerSpec) -> None:
    """Read what the broker still holds of the run's topic as ``STORAGE_GROUP`` (which
    subscribed before the first send and read nothing until the end): a line per delivery in
    ``stored-<name>.jsonl``."""
    _read_as(spec, STORAGE_GROUP, STORED)


def _read_as(spec: WorkerSpec, group: str, kind: str) -> None:
    ledger = Ledger(Path(spec.run_dir), kind, spec.name)
    sub = open_transport(spec.transport, spec.config()).subscriber(group)
    signal.signal(signal.SIGTERM, lambda *_: sub.close())
    sub.on_idle(ledger.flush)
    replies = spec.replies and group == REPLAY_GROUP
    stream = sub.subscribe(reply_topic_of(spec.run_id) if replies else topic_of(spec.run_id))
    _ready(spec)
    consumer = q(spec.name)
    for d in stream:
        ledger.write_lines(
            f'{{"ts":{time.time()!r},"consumer":{consumer},"id":{q(d.message.id)}}}\n',
            flush=False,
        )
        d.ack()
    ledger.close()


def main(argv: list[str]) -> None:
    """``python -m msglab.lab.worker ROLE NAME RUN_ID`` with the WorkerSpec as JSON on standard
    input (the command line names the worker for ``ps``; the spec holds passwords)."""
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps every thread's stack
    role = argv[0]
    spec = WorkerSpec(**json.loads(sys.stdin.read()))
    # A worker holds thousands of messages in flight, and every young collection would walk
    # them (10-15 % of a Kafka producer's time, measured). Its loops make no reference
    # cycles, so collections can be rare; what exists at start-up is never collected.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    roles = {
        "producer": produce,
        "consumer": consume,
        "replayer": replay,
        "storage": read_stored,
        "relay": relay,
    }
    roles[role](spec)


if __name__ == "__main__":
    main(sys.argv[1:])
