"""What every lab worker shares: its spec, the run's topic and groups, and how it tells the
orchestrator it is ready or records that it killed itself."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from msglab.config import Backoff, ClientConfig
from msglab.lab.evidence import FAULTS, Ledger
from msglab.profiles import DeliveryProfile

GROUP = "lab"  # the consumer group of every lab run
REPLAY_GROUP = "lab-replay"  # the second group: replay, fanout, request-reply (its replies)
STORAGE_GROUP = "lab-stored"  # reads, after the run, what the broker kept (durability faults)
OUTPUT_GROUP = "lab-output"  # exactly-once: reads <topic>-out, read_committed (the delivered)
OUTPUT_KEPT_GROUP = "lab-output-kept"  # ... and after the run, every committed copy once
POISON_ATTEMPTS = 3  # the poison workload: runs of its handler before the dead letter


@dataclass(frozen=True)
class WorkerSpec:
    role: str  # producer | consumer | replayer | storage | relay
    name: str  # p0, c1 ...
    run_id: str
    run_dir: str
    transport: str
    url: str = field(repr=False)  # with its password: never logged
    profile: str
    pattern: str = "direct"  # lab.scenario.PATTERNS
    db_url: str = field(default="", repr=False)  # PostgreSQL: effects, business rows, the outbox
    # producer
    first: int = 0  # this producer's messages: seq first .. first + count - 1
    count: int = 0
    keys: int = 8
    size: int = 100
    rate: float = 0.0  # this producer's messages per second (0: unbounded)
    batch: int = 0  # messages per publish call or transaction (0: 20 ms of the rate, or all)
    seed: int = 1
    die_after_commits: int = 0  # producer-kill (dual-write, outbox): SIGKILL self after this
    # many messages committed, before publishing them (publish-then-commit: after this many
    # published, before committing them)
    # relay
    relay_ordering: str = "keys"  # config.RELAY_ORDERINGS
    die_after_relayed: int = 0  # relay-kill: SIGKILL self when this many were relayed, midway
    # consumer
    die_after_effects: int = 0  # consumer-kill: SIGKILL self after this many effects
    slow_ms: float = 0.0
    poison: tuple[str, ...] = ()  # the poison workload: ids whose handler always fails
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


def topic_of(run_id: str) -> str:
    """The topic of a lab run; its consumers form the group ``GROUP``."""
    return f"lab-{run_id}"


def led_of(transport: str, run_id: str) -> str:
    """What a cluster fault asks who leads: the run's topic (Kafka: its partitions' leaders),
    or its consumers' queue (RabbitMQ: ``<topic>.<group>``, a quorum queue's leader)."""
    topic = topic_of(run_id)
    return f"{topic}.{GROUP}" if transport == "rabbitmq" else topic


def output_topic_of(run_id: str) -> str:
    """Where the consumers of an exactly-once run copy the topic, in Kafka transactions."""
    return f"lab-{run_id}-out"


def reply_topic_of(run_id: str) -> str:
    """Where the consumers of a request-reply run answer (one reply per message, same id)."""
    return f"lab-{run_id}-replies"


def ready(spec: WorkerSpec) -> None:
    """Tell the orchestrator the subscription exists (``ready-<name>``)."""
    (Path(spec.run_dir) / f"ready-{spec.name}").write_text("subscribed\n")


def die(spec: WorkerSpec, fault: str, detail: str) -> None:
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
