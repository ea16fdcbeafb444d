"""Readers of a second group, with no effect: the replayer (``REPLAY_GROUP``: the topic after
the run or alongside it, or the replies of a request-reply run) and the storage reader
(``STORAGE_GROUP``: after a durability fault, what the broker kept)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from msglab.brokers import open_transport
from msglab.lab.evidence import REPLAYS, STORED, Ledger, read_line
from msglab.lab.workers.spec import (
    REPLAY_GROUP,
    STORAGE_GROUP,
    WorkerSpec,
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


def _read_as(spec: WorkerSpec, group: str, kind: str) -> None:
    ledger = Ledger(Path(spec.run_dir), kind, spec.name)
    sub = open_transport(spec.transport, spec.config()).subscriber(group)
    signal.signal(signal.SIGTERM, lambda *_: sub.close())
    sub.on_idle(ledger.flush)
    replies = spec.replies and group == REPLAY_GROUP
    stream = sub.subscribe(reply_topic_of(spec.run_id) if replies else topic_of(spec.run_id))
    ready(spec)
    for d in stream:
        ledger.write_lines(read_line(spec.name, d.message.id, time.time()), flush=False)
        d.ack()
    ledger.close()
