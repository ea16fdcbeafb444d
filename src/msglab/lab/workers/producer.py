"""The producer of a lab run: a ``sending`` line per message before it sends, an outcome line
(``ok``, ``fail``, ``unknown``) after; under at-least-once it retries what was not confirmed,
with the same id, for ``RETRY_FOR_S``. What "sent" means is the pattern's: ``direct``, the
broker confirmed the publish; ``dual-write``, ``outbox`` and ``cdc``, the business transaction
committed (then the producer publishes itself, or the outbox relay or Debezium does);
``publish-then-commit``, the business transaction committed after the broker confirmed the
publish (a send that dies between the two leaves a delivered message with no business row)."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from msglab.brokers import open_transport
from msglab.db import engine
from msglab.errors import PublishError, TransportError
from msglab.lab import effects
from msglab.lab.evidence import SENDS, Ledger, SendLines, message_id_prefix
from msglab.lab.workers.spec import WorkerSpec, die, topic_of
from msglab.message import Message
from msglab.ports import Publisher

# messages per publish call when the rate is unbounded: the bench publishes its whole batch in
# one call, and each call waits for the broker's last acks; 20 000 rather than 5 000 raised the
# Kafka lab publish rate from a median 65k to 76k msgs/s (4 alternating runs of 60 000), and a
# run of up to 100 000 now waits once
UNBOUNDED_BATCH = 100_000
RETRY_FOR_S = 30.0  # an at-least-once producer retries a batch this long at most
GIVE_UP_AFTER_S = 45.0  # with nothing confirmed for this long, the producer stops sending
SENT_HEADER = "sent"  # the producer's clock when the batch was built (epoch seconds)
PUBLISH_FIRST = "publish-then-commit"


def produce(spec: WorkerSpec) -> None:
    sends = Ledger(Path(spec.run_dir), SENDS, spec.name)
    transport = open_transport(spec.transport, spec.config())
    pub = transport.publisher()
    # connect and look up the topic before the first send (as `msglab bench` does); a broker
    # that is away now is recorded by the first sends
    topic = topic_of(spec.run_id)
    with contextlib.suppress(TransportError):
        pub.publish(topic, [])
    retry = spec.profile != "at-most-once"
    db = engine(spec.db_url) if spec.pattern != "direct" else None
    progress = _Progress()
    if db is None:
        attempt = _publish(pub, topic)
    elif spec.pattern == PUBLISH_FIRST:
        attempt = _publish_then_commit(pub, db, spec, topic, progress)
    else:
        attempt = _commit(db, spec, topic)
    rng = random.Random(f"{spec.seed}-{spec.name}")
    payload = bytes(rng.getrandbits(8) for _ in range(spec.size))
    size = spec.batch or (max(1, int(spec.rate * 0.02)) if spec.rate else UNBOUNDED_BATCH)
    interval = size / spec.rate if spec.rate else 0.0
    next_at = time.monotonic()
    keys = [f"k{i}" for i in range(spec.keys)]
    lines = SendLines(spec.run_id, spec.name, keys)
    prefix = message_id_prefix(spec.run_id, spec.name)
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
            message = Message.unchecked(payload, keys[k], headers, f"{prefix}{seq}")
            batch.append((message, lines.body(seq, k)))
        confirmed = _sends(attempt, batch, sends, lines, retry, progress)
        if db is not None and spec.pattern != PUBLISH_FIRST:
            _after_commit(pub, spec, topic, confirmed, progress)
    pub.close()
    sends.close()


class _Progress:
    """When the producer last had a message confirmed."""

    def __init__(self) -> None:
        self.last_ok = time.monotonic()
        self.committed = 0  # messages whose business transaction committed (dual-write, outbox)
        self.published = 0  # messages the broker confirmed (publish-then-commit)

    def stalled(self) -> bool:
        return time.monotonic() - self.last_ok > GIVE_UP_AFTER_S


Attempt = Callable[[list[Message]], dict[str, str]]
"""Sends messages once; the outcome (``fail`` or ``unknown``) of each id not confirmed."""


def _sends(
    attempt: Attempt,
    batch: list[tuple[Message, str]],
    sends: Ledger,
    lines: SendLines,
    retry: bool,
    progress: _Progress,
) -> list[Message]:
    """Send (message, line body) pairs with ``attempt``, recording each try and its outcome;
    under at-least-once retry what was not confirmed until RETRY_FOR_S. The messages
    confirmed."""
    pending = batch
    confirmed: list[Message] = []
    deadline = time.monotonic() + RETRY_FOR_S
    tries = 0
    while pending:
        tries += 1
        sent_ts = time.time()
        sends.write_lines(lines.sending([body for _, body in pending], tries, sent_ts))
        outcome = attempt([m for m, _ in pending])
        results = [(body, outcome.get(m.id, "ok")) for m, body in pending]
        sends.write_lines(lines.outcomes(results, tries, sent_ts, time.time()))
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
    """dual-write, publish-then-commit, outbox, cdc, table-cdc: a send is the business
    transaction (a ``lab_orders`` row per message, and under outbox and cdc the messages in the
    outbox table; table-cdc: the row alone), ``ok`` once committed; a retry stores each id
    once."""
    outbox = spec.pattern in ("outbox", "cdc")

    def attempt(messages: list[Message]) -> dict[str, str]:
        outcome = effects.commit_orders(db, spec.run_id, topic, messages, outbox)
        return {} if outcome == "ok" else {m.id: outcome for m in messages}

    return attempt


def _publish_then_commit(
    pub: Publisher, db: Any, spec: WorkerSpec, topic: str, progress: _Progress
) -> Attempt:
    """publish-then-commit: a send publishes (the broker's confirm awaited), then commits the
    business transaction of what the broker confirmed; ``ok`` once committed. What the publish
    did not confirm is not committed and keeps the publish's outcome; a retry publishes again
    (a delivered copy more) before it commits. producer-kill: die between the publish and the
    commit once ``die_after_commits`` messages were published, leaving them delivered with no
    business row (phantoms)."""
    publish, commit = _publish(pub, topic), _commit(db, spec, topic)

    def attempt(messages: list[Message]) -> dict[str, str]:
        outcome = publish(messages)
        published = [m for m in messages if m.id not in outcome]
        progress.published += len(published)
        if published and spec.die_after_commits and progress.published >= spec.die_after_commits:
            die(spec, "producer-kill", f"after publish {progress.published}, before committing")
        return {**outcome, **commit(published)} if published else outcome

    return attempt


def _after_commit(
    pub: Publisher, spec: WorkerSpec, topic: str, committed: list[Message], progress: _Progress
) -> None:
    """producer-kill: die between the commit and the publish once ``die_after_commits`` are
    committed; dual-write then publishes what was committed itself (the relay or Debezium
    publishes the outbox's)."""
    progress.committed += len(committed)
    if spec.die_after_commits and progress.committed >= spec.die_after_commits:
        step = {"dual-write": "before publishing", "table-cdc": "Debezium publishes"}.get(
            spec.pattern, "the relay publishes"
        )
        die(spec, "producer-kill", f"after commit {progress.committed}, {step}")
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
