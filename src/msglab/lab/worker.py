"""Producer and consumer processes of a lab run (separate OS processes: faults kill them).

``python -m msglab.lab.worker producer|consumer SPEC_JSON``. A producer records, per message,
a ``sending`` line before it publishes and an outcome line (``ok``, ``fail``, ``unknown``)
after; under at-least-once it retries what was not confirmed, with the same id. A consumer
records each delivery, applies the effect (a row in PostgreSQL), then acks: evidence before
effect before ack, so a killed worker leaves everything the checker needs.
"""

from __future__ import annotations

import faulthandler
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msglab.brokers import open_transport
from msglab.config import Backoff, ClientConfig
from msglab.errors import PublishError, TransportError
from msglab.lab import effects
from msglab.lab.evidence import DELIVERIES, FAULTS, SENDS, Ledger
from msglab.message import Delivery, Message
from msglab.profiles import DeliveryProfile

UNBOUNDED_BATCH = 500  # messages per publish call when the rate is unbounded
RETRY_FOR_S = 30.0  # an at-least-once producer retries a batch this long at most
GIVE_UP_AFTER_S = 45.0  # with nothing confirmed for this long, the producer stops sending


@dataclass(frozen=True)
class WorkerSpec:
    role: str  # producer | consumer
    name: str  # p0, c1 ...
    run_id: str
    run_dir: str
    transport: str
    url: str
    profile: str
    # producer
    first: int = 0  # this producer's messages: seq first .. first + count - 1
    count: int = 0
    keys: int = 8
    size: int = 100
    rate: float = 0.0  # this producer's messages per second (0: unbounded)
    seed: int = 1
    # consumer
    effects_url: str = ""
    die_after_effects: int = 0  # consumer-kill: SIGKILL self after this many effects
    slow_ms: float = 0.0

    def config(self) -> ClientConfig:
        return ClientConfig(
            url=self.url,
            profile=DeliveryProfile.parse(self.profile),
            connect_timeout_s=3.0,
            request_timeout_s=10.0,
            reconnect=Backoff(attempts=20, first_s=0.2, max_s=2.0),
            claim_idle_s=3.0,
            session_timeout_s=6.0,
            prefetch=200,
        )


def produce(spec: WorkerSpec) -> None:
    run_dir = Path(spec.run_dir)
    sends = Ledger(run_dir, SENDS, spec.name)
    transport = open_transport(spec.transport, spec.config())
    pub = transport.publisher()
    retry = spec.profile == "at-least-once"
    rng = random.Random(f"{spec.seed}-{spec.name}")
    payload = bytes(rng.getrandbits(8) for _ in range(spec.size))
    size = max(1, int(spec.rate * 0.02)) if spec.rate else UNBOUNDED_BATCH  # 20 ms of load
    interval = size / spec.rate if spec.rate else 0.0
    next_at = time.monotonic()
    progress = _Progress()
    for start in range(0, spec.count, size):
        if progress.stalled():
            break  # the broker confirms nothing any more: the rest is never sent
        batch = []
        for seq in range(start, min(start + size, spec.count)):
            key = f"k{(spec.first + seq) % spec.keys}"
            batch.append(
                Message(
                    payload,
                    key=key,
                    headers={"run": spec.run_id, "p": spec.name, "seq": str(seq)},
                    id=f"{spec.run_id}-{spec.name}-{seq}",
                )
            )
        if interval:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
        _send(pub, batch, sends, spec, retry, progress)
    pub.close()
    sends.close()


class _Progress:
    """When the producer last had a message confirmed."""

    def __init__(self) -> None:
        self.last_ok = time.monotonic()

    def stalled(self) -> bool:
        return time.monotonic() - self.last_ok > GIVE_UP_AFTER_S


def _send(
    pub: Any,
    batch: list[Message],
    sends: Ledger,
    spec: WorkerSpec,
    retry: bool,
    progress: _Progress,
) -> None:
    pending = batch
    deadline = time.monotonic() + RETRY_FOR_S
    attempt = 0
    while pending:
        attempt += 1
        sent_ts = time.time()
        sends.write_many([_line(m, spec, sent_ts, "sending", attempt) for m in pending])
        outcome: dict[str, str] = {}
        try:
            pub.publish(_topic(spec), pending)
        except PublishError as exc:
            outcome = {**{i: "fail" for i in exc.failed}, **{i: "unknown" for i in exc.unknown}}
        except TransportError:  # not connected: nothing of this batch was sent
            outcome = {m.id: "fail" for m in pending}
        done_ts = time.time()
        sends.write_many(
            [_line(m, spec, sent_ts, outcome.get(m.id, "ok"), attempt, done_ts) for m in pending]
        )
        if len(outcome) < len(pending):
            progress.last_ok = time.monotonic()
        pending = [m for m in pending if m.id in outcome]
        if not retry or time.monotonic() > deadline or progress.stalled():
            return
        if pending:
            time.sleep(0.3)


def _topic(spec: WorkerSpec) -> str:
    return f"lab-{spec.run_id}"


def _line(
    m: Message,
    spec: WorkerSpec,
    sent_ts: float,
    outcome: str,
    attempt: int,
    done_ts: float | None = None,
) -> dict[str, Any]:
    line = {
        "sent_ts": sent_ts,
        "producer": spec.name,
        "seq": int(m.headers["seq"]),
        "id": m.id,
        "key": m.key,
        "outcome": outcome,
        "try": attempt,
    }
    if done_ts is not None:
        line["ts"] = done_ts
    return line


def consume(spec: WorkerSpec) -> None:
    run_dir = Path(spec.run_dir)
    deliveries = Ledger(run_dir, DELIVERIES, spec.name)
    db = effects.engine(spec.effects_url)
    transport = open_transport(spec.transport, spec.config())
    sub = transport.subscriber("lab")
    signal.signal(signal.SIGTERM, lambda *_: sub.close())  # graceful: ends the iteration
    stream = sub.subscribe(_topic(spec))
    (run_dir / f"ready-{spec.name}").write_text("subscribed\n")
    applied = 0
    with db.connect() as conn:
        for d in stream:
            applied += 1
            _handle(spec, d, deliveries, conn, applied)
    deliveries.close()


def _handle(spec: WorkerSpec, d: Delivery, deliveries: Ledger, conn: Any, applied: int) -> None:
    """Evidence, then the effect (committed), then the ack."""
    m = d.message
    deliveries.write(
        {
            "ts": time.time(),
            "consumer": spec.name,
            "id": m.id,
            "attempt": d.attempt,
            "redelivered": d.redelivered,
            "key": m.key,
            "producer": m.headers.get("p"),
            "seq": m.headers.get("seq"),
        }
    )
    if spec.slow_ms:
        time.sleep(spec.slow_ms / 1000)
    effects.apply(conn, spec.run_id, spec.name, [(m.id, time.time())])
    if spec.die_after_effects and applied >= spec.die_after_effects:
        Ledger(Path(spec.run_dir), FAULTS, spec.name).write(
            {
                "ts": time.time(),
                "fault": "consumer-kill",
                "action": "kill",
                "target": spec.name,
                "pid": os.getpid(),
                "detail": f"after effect {applied}, before its ack",
            }
        )
        os.kill(os.getpid(), signal.SIGKILL)
    d.ack()


def main(argv: list[str]) -> None:
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps every thread's stack
    role, raw = argv
    spec = WorkerSpec(**json.loads(raw))
    (produce if role == "producer" else consume)(spec)


if __name__ == "__main__":
    main(sys.argv[1:])
