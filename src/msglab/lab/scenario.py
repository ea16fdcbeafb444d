"""What a lab run does: transport, profile, fault, load; validated before anything starts."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from msglab.brokers import EXTRA_OF, TRANSPORTS, service_of
from msglab.config import RELAY_ORDERINGS
from msglab.errors import UsageError
from msglab.lab.faults import FAULTS, Fault, fault
from msglab.lab.faults.cluster import CUTS, PARTITIONS
from msglab.lab.knobs import parse
from msglab.lab.workloads import WORKLOADS, Workload
from msglab.profiles import DeliveryProfile

PATTERNS: dict[str, str] = {
    "direct": "the producer publishes to the broker; sent = the broker confirmed it",
    "dual-write": "the producer commits its business row, then publishes; sent = committed",
    "publish-then-commit": "the producer publishes (the broker's confirm awaited), then commits "
    "its business row; sent = committed",
    "outbox": "the producer commits its business row and the message to the outbox table in "
    "one transaction; a relay publishes the outbox; sent = committed",
    "cdc": "as outbox, but Debezium (Kafka Connect) reads the committed rows from PostgreSQL's "
    "log and publishes them to Kafka instead of msglab's relay; sent = committed",
    "table-cdc": "the producer commits its business row only (no outbox); Debezium streams the "
    "table's changes to Kafka and the consumer decodes each into the message; sent = committed",
}
"""How a producer's message reaches the broker (``--pattern``)."""

CONNECT_PATTERNS = ("cdc", "table-cdc")
"""The patterns whose messages Debezium publishes, through Kafka Connect."""

RELAY_BATCH = 500
"""Outbox rows per relay pass (outbox pattern): the most one relay crash can duplicate."""


def transport_label(report: dict[str, Any]) -> str:
    """A run's transport as tables show it: ``kafka``, or ``kafka via outbox``."""
    pattern = report.get("pattern", "direct")
    return report["transport"] if pattern == "direct" else f"{report['transport']} via {pattern}"


def fault_label(report: dict[str, Any]) -> str:
    """What happened in a run as tables show it: its fault, its workload and the settings it
    set (``power-cut, appendfsync=no``); ``none`` for none of them."""
    cluster = ["cluster"] if report.get("cluster") else []
    return ", ".join([*cluster, *happened(report), *report.get("sets", ())]) or "none"


def happened(report: dict[str, Any]) -> list[str]:
    """A run's fault, with what it cut (``partition leader-and-clients``, on a cluster
    ``power-cut all``), and its workload; neither when ``none``."""
    fault = report["fault"]
    if fault == "partition":  # which partition: the leader alone, with its clients, halves
        fault = f"partition {report.get('partition', 'leader')}"
    elif fault == "power-cut" and report.get("cluster"):  # whose power: leader, one, all
        fault = f"power-cut {report.get('cut', 'leader')}"
    relays = report.get("relays", 1)
    several = [f"{relays} relays"] if relays > 1 else []
    if report.get("relay_ordering", "keys") != "keys":
        several.append(report["relay_ordering"])
    return [n for n in (fault, report.get("workload", "none")) if n != "none"] + several


def new_run_id() -> str:
    """A fresh run id: the local time and six random hex digits (``20250101-120000-1a2b3c``)."""
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class Scenario:
    """One lab run. ``rate`` is messages per second over all producers (0: as fast as they go).

    kill_after: the fault fires after this many sends (broker, producer and network faults) or
    effects (consumer-kill). down_s: how long a killed or stopped broker stays down, or a
    network fault lasts. latency_ms: the delay each way of the latency fault. warmup_s: pause
    between the consumers' subscription (queues declared) and the first send; RabbitMQ 3.10
    loses a quorum queue killed < 0.5 s after its declaration, a row of its own shows that.
    drain_quiet_s: after the producers finish and the fault healed, the run ends once no
    delivery came for this long (or after drain_max_s). batch: messages per publish call (under
    every pattern but direct: per business transaction); 0: 20 ms of the rate, or every message
    at once when the rate is unbounded.
    """

    transport: str
    profile: str = "at-least-once"
    fault: str = "none"
    pattern: str = "direct"
    workload: str = "none"
    sets: tuple[str, ...] = ()  # server and client settings for the run, "KEY=VALUE" (lab.knobs)
    messages: int = 2000
    rate: float = 0.0
    producers: int = 1
    consumers: int = 1
    keys: int = 8
    size: int = 100
    batch: int = 0
    seed: int = 1
    kill_after: int = 0
    down_s: float = 2.0
    slow_ms: float = 5.0
    latency_ms: float = 300.0
    warmup_s: float = 1.0
    drain_quiet_s: float = 0.0  # 0: 5 s where nothing is stored (pub/sub), else 30 s
    drain_max_s: float = 90.0
    cluster: bool = False  # the transport's replicated cluster (CLUSTER_OF), not its single node
    partition: str = "leader"  # what --fault partition cuts (faults.cluster.PARTITIONS)
    cut: str = "leader"  # whose power --fault power-cut --cluster cuts (faults.cluster.CUTS)
    relays: int = 1  # outbox: relay processes at once (relay-kill kills the first)
    relay_ordering: str = "keys"  # outbox: config.RELAY_ORDERINGS
    run_id: str = field(default_factory=new_run_id)

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS or self.transport == "memory":
            valid = [t for t in TRANSPORTS if t != "memory"]
            raise UsageError(f"unknown transport {self.transport!r}; valid: {', '.join(valid)}")
        if DeliveryProfile.parse(self.profile) is DeliveryProfile.EXACTLY_ONCE and (
            self.transport != "kafka" or self.pattern != "direct" or self.workload != "none"
        ):
            raise UsageError(
                "exactly-once is a Kafka-to-Kafka pipeline: the lab runs it on -t kafka, "
                "--pattern direct, no workload (its consumers copy the topic to <topic>-out "
                "in Kafka transactions, and a read_committed reader of <topic>-out is what is "
                "delivered)"
            )
        if self.fault in WORKLOADS and self.fault != "none":
            raise UsageError(
                f"{self.fault} is a workload, not a fault: use --workload {self.fault}"
            )
        fault(self.fault)  # an unknown name fails here, listing the valid ones
        # an unknown key or value fails here, listing the valid ones; a knob of another
        # transport, naming the ones it applies to
        parse(self.sets, self.transport, self.pattern, self.cluster)
        if self.workload not in WORKLOADS:
            raise UsageError(f"unknown workload {self.workload!r}; valid: {', '.join(WORKLOADS)}")
        if self.pattern not in PATTERNS:
            raise UsageError(f"unknown pattern {self.pattern!r}; valid: {', '.join(PATTERNS)}")
        if self.transport == "redis-pubsub" and self.profile != "at-most-once":
            raise UsageError(
                f"redis-pubsub cannot promise {self.profile}: pub/sub stores nothing and has no "
                "acknowledgement; run it with --profile at-most-once"
            )
        service_of(self.transport, self.cluster)  # no cluster: refused, naming those with one
        if self.cluster and self.uses_connect:
            raise UsageError(
                f"--cluster: the {self.pattern} pattern's Kafka Connect uses the single Kafka"
            )
        if self.partition not in PARTITIONS:
            raise UsageError(
                f"unknown partition {self.partition!r}; valid: {', '.join(PARTITIONS)}"
            )
        if self.partition != "leader" and self.fault != "partition":
            raise UsageError("--partition goes with --fault partition")
        if self.cut not in CUTS:
            raise UsageError(f"unknown cut {self.cut!r}; valid: {', '.join(CUTS)}")
        if self.cut != "leader" and not (self.cluster and self.fault == "power-cut"):
            raise UsageError("--cut goes with --fault power-cut --cluster")
        refused = self.fault_kind.refusal(self)
        if refused:
            usable = [f.name for f in FAULTS.values() if not f.refusal(self)]
            raise UsageError(f"{refused}; the faults that apply: {', '.join(usable)}")
        if self.relay_ordering not in RELAY_ORDERINGS:
            raise UsageError(
                f"unknown relay ordering {self.relay_ordering!r}; "
                f"valid: {', '.join(RELAY_ORDERINGS)}"
            )
        if (self.relays != 1 or self.relay_ordering != "keys") and self.pattern != "outbox":
            raise UsageError("--relays and --relay-ordering go with --pattern outbox")
        if self.relays < 1:
            raise UsageError("--relays must be at least 1")
        if self.uses_connect and self.transport != "kafka":
            raise UsageError(
                f"the {self.pattern} pattern publishes through Kafka Connect: use -t kafka"
            )
        if self.messages < 1 or self.producers < 1 or self.consumers < 1 or self.keys < 1:
            raise UsageError("messages, producers, consumers and keys must be at least 1")
        if self.rate < 0 or self.size < 0 or self.batch < 0:
            raise UsageError("rate, size and batch cannot be negative")
        if self.down_s < 0 or self.latency_ms < 0:
            raise UsageError("down and latency cannot be negative")

    @property
    def fault_kind(self) -> Fault:
        """The run's fault (``Fault``, whose name is ``fault``)."""
        return FAULTS[self.fault]

    @property
    def workload_kind(self) -> Workload:
        """The run's workload (``Workload``, whose name is ``workload``)."""
        return WORKLOADS[self.workload]

    @property
    def replies(self) -> bool:
        """True when the consumers answer every message on the reply topic (request-reply)."""
        return self.workload_kind.replies

    @property
    def commits_first(self) -> bool:
        """True when a send is a business transaction (dual-write, publish-then-commit, outbox,
        cdc), not a publish; under publish-then-commit the publish comes first."""
        return self.pattern != "direct"

    @property
    def uses_connect(self) -> bool:
        """True when Debezium publishes the run's messages (cdc, table-cdc)."""
        return self.pattern in CONNECT_PATTERNS

    @property
    def fault_service(self) -> str | None:
        """The server the fault acts on: PostgreSQL, Kafka Connect, the broker, or None."""
        return self.fault_kind.service(self)

    @property
    def through_proxy(self) -> bool:
        """True when the clients reach the broker through Toxiproxy (network faults)."""
        return self.fault_kind.through_proxy

    @property
    def service(self) -> str | None:
        """The server behind the transport (None: the files transport needs none), or its
        cluster with ``cluster``."""
        return service_of(self.transport, self.cluster)

    @property
    def extras(self) -> tuple[str, ...]:
        """The pip extras the run needs: its transport's driver, PostgreSQL's (every consumer's
        effect is a row there) and, for cdc and table-cdc, Kafka Connect's client."""
        transport = EXTRA_OF[self.transport]
        return (
            *([transport] if transport else []),
            "postgres",
            *(["cdc"] if self.uses_connect else []),
        )

    @property
    def exactly_once(self) -> bool:
        """A Kafka pipeline run: consumers copy to ``<topic>-out`` in transactions."""
        return DeliveryProfile.parse(self.profile) is DeliveryProfile.EXACTLY_ONCE

    @property
    def quiet_s(self) -> float:
        """How long the drain waits without a delivery before it calls the rest lost: a
        consumer that rejoins after a broker or consumer kill may be silent for ~20 s (Kafka:
        session timeout, coordinator recovery), and an early stop would count it as loss."""
        if self.drain_quiet_s:
            return self.drain_quiet_s
        return 5.0 if self.transport == "redis-pubsub" else 30.0

    @property
    def fault_at(self) -> int:
        """The number of sends (or effects) after which the fault fires."""
        return self.kill_after or max(1, self.messages // 3)

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON has them (``sets`` a list)."""
        return {**asdict(self), "sets": list(self.sets)}
