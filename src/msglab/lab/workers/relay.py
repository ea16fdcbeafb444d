"""The outbox relay of a lab run (``msglab.outbox.Relay``) until SIGTERM."""

from __future__ import annotations

import signal
import threading

from msglab.brokers import open_transport
from msglab.db import engine
from msglab.lab.scenario import RELAY_BATCH
from msglab.lab.workers.spec import WorkerSpec, die, topic_of
from msglab.outbox import Relay


def relay(spec: WorkerSpec) -> None:
    """Publish the run's outbox rows until SIGTERM: marks after the broker's confirm, or first
    under at-most-once. relay-kill: SIGKILL self midway through the pass that reaches
    ``die_after_relayed`` (published and not marked, or marked and not published)."""
    db = engine(spec.db_url)
    pub = open_transport(spec.transport, spec.config()).publisher()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    relayed = 0
    first = spec.profile == "at-most-once"

    def midway(ids: list[str]) -> None:
        nonlocal relayed
        relayed += len(ids)
        if spec.die_after_relayed and relayed >= spec.die_after_relayed:
            step = "marked, not yet published" if first else "published, not yet marked"
            die(spec, "relay-kill", f"midway through a pass of {len(ids)}: {step}")

    Relay(
        db,
        pub,
        batch_size=RELAY_BATCH,
        mark_first=first,
        topics=[topic_of(spec.run_id)],
        ordering=spec.relay_ordering,
        midway=midway,
    ).run(stop)
    pub.close()
