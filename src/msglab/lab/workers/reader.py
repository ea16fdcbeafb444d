"""Readers of a second group, with no effect: the replayer (``REPLAY_GROUP``: the topic after
the run or alongside it, or the replies of a request-reply run) and the storage reader
(``STORAGE_GROUP``: after a durability fault, what the broker kept)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from msglab.brokers import open_transport
from msglab.lab.evidence import (
    DELIVERIES,
    OUTPUT,
    REPLAYS,
    STORED,
    Ledger,
    delivery_lines,
    read_line,
)
from msglab.lab.workers.spec import (
    OUTPUT_GROUP,
    OUTPUT_KEPT_GROUP,
    REPLAY_GROUP,
    STORAGE_GROUP,
    WorkerSpec,
    output_topic_of,
    ready,
    reply_topic_of,
    topic_of,
)


def replay(spec: WorkerSpec) -> None:
    """Read the run's topic (or its replies) as a second group (``REPLAY_GROUP``): a line per
    delivery in ``replays-<name>.jsonl``, acked, no effect."""
    _read_as(spec, REPLAY_GROUP, REPLAYS)


def read_stored(spec: WorkerSpec) -> None:
    """Read what the broker still holds of the run's topic as ``STORAGE_GROUP`` (which
    subscribed before the first send and read nothing until the end): a line per delivery in
    ``stored-<name>.jsonl``."""
    _read_as(spec, STORAGE_GROUP, STORED)


def read_output(spec: WorkerSpec) -> None:
    """An exactly-once run's delivered messages: ``<topic>-out`` read as ``OUTPUT_GROUP``,
    read_committed (the profile's consumer), a delivery line per message as a consumer writes
    them (``deliveries-<name>.jsonl``), acked. Only committed copies are seen: an aborted
    transaction's never are."""
    ledger = Ledger(Path(spec.run_dir), DELIVERIES, spec.name)
    sub = open_transport(spec.transport, spec.config()).subscriber(OUTPUT_GROUP)
    signal.signal(signal.SIGTERM, lambda *_: sub.close())
    sub.on_idle(ledger.flush)
    batches = sub.batches(output_topic_of(spec.run_id), 500)
    ready(spec)
    for batch in batches:
        now = time.time()
        records = [
            (now, m.id, a, m.key) for m, a in zip(batch.messages, batch.attempts, strict=True)
        ]
        ledger.write_lines(delivery_lines(spec.name, records), flush=False)
        batch.ack()
    ledger.close()


def read_output_kept(spec: WorkerSpec) -> None:
    """After an exactly-once run: every committed copy ``<topic>-out`` holds, read from its
    start by a group of its own (``OUTPUT_KEPT_GROUP``, no fault while it reads, so it reads
    each copy once), a line per copy in ``output-<name>.jsonl``: a message copied twice shows
    twice (the live reader may read a copy again after a broker kill; this one does not)."""
    _read_as(spec, OUTPUT_KEPT_GROUP, OUTPUT, output_topic_of(spec.run_id))


def _read_as(spec: WorkerSpec, group: str, kind: str, topic: str | None = None) -> None:
    ledger = Ledger(Path(spec.run_dir), kind, spec.name)
    sub = open_transport(spec.transport, spec.config()).subscriber(group)
    signal.signal(signal.SIGTERM, lambda *_: sub.close())
    sub.on_idle(ledger.flush)
    replies = spec.replies and group == REPLAY_GROUP
    if topic is None:
        topic = reply_topic_of(spec.run_id) if replies else topic_of(spec.run_id)
    stream = sub.subscribe(topic)
    ready(spec)
    for d in stream:
        ledger.write_lines(read_line(spec.name, d.message.id, time.time()), flush=False)
        d.ack()
    ledger.close()
