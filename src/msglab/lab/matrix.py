"""The comparison matrix: one row per claim of docs/guarantees.md, each a lab scenario.

Consumer kills fire after 510 effects (2040 in the full matrix), inside a fetched batch: at a
batch boundary (a multiple of the prefetch, 200) an at-most-once consumer loses nothing, and
one that keeps up with the producer fetches a few messages at a time and loses few or none.

"Kafka scales by brokers" is a probe (``scaling``): two brokers on one machine share its cores,
so each broker is capped by a Kafka client quota, standing in for its own disk and network; the
uncapped figures are shown beside it as measured.

Claims that are not about delivering messages (locks, external-call hygiene, two-phase commit)
are ``Probe`` rows: a measured experiment of ``msglab.lab.probes`` instead of a lab run.

Every row names the claim it tests and what would confirm it (``expect``: a predicate on the
report, described in words). The measured figures decide; a claim the run does not bear out
is shown as *not observed*, never hidden.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from msglab.infra.connect import OFFSET_FLUSH_INTERVAL_MS
from msglab.lab.probes.scaling import QUOTA_BYTES_PER_S
from msglab.lab.scenario import RELAY_BATCH, fault_label

Report = dict[str, Any]


@dataclass(frozen=True)
class Row:
    claim: str
    expect: str
    check: Callable[[Report], bool]
    transport: str
    profile: str
    fault: str
    pattern: str = "direct"
    workload: str = "none"
    sets: tuple[str, ...] = ()  # server and client settings, "KEY=VALUE" (lab.knobs)
    messages: int = 1500
    rate: float = 1500.0
    kill_after: int = 0
    consumers: int = 1
    keys: int = 8
    slow_ms: float = 5.0
    warmup_s: float = 1.0
    down_s: float = 2.0  # a killed broker's downtime; a network fault's duration
    drain_quiet_s: float = 0.0  # 0: the scenario's default (30 s after a Kafka rejoin)
    # the price of the row's settings: > 0, compare also measures their publish rate without a
    # fault, unbounded, this many messages per publish call (or business transaction)
    price_batch: int = 0
    price_messages: int = 3000
    cluster: bool = False  # on the transport's replicated cluster (--cluster)
    partition: str = "leader"  # what a partition fault cuts
    cut: str = "leader"  # whose power a cluster's power cut cuts
    relays: int = 1  # outbox: relay processes at once
    relay_ordering: str = "keys"  # outbox: key shares or skip-locked
    repeat: int = 1  # runs of the cell (--quick runs half as many, at least 1)
    baseline: bool = False  # compare also runs the cell without its workload (``baseline``)
    published: str = ""  # the published figure this row stands beside, and its source

    @property
    def label(self) -> str:
        happens = fault_label(
            {
                "fault": self.fault,
                "workload": self.workload,
                "sets": self.sets,
                "cluster": self.cluster,
                "partition": self.partition,
                "cut": self.cut,
                "relays": self.relays,
                "relay_ordering": self.relay_ordering,
            }
        )
        return f"{self.transport} {self.pattern} {self.profile} {happens}"


@dataclass(frozen=True)
class Probe:
    """A claim measured by a probe (``msglab.lab.probes``): its report's ``figures`` decide."""

    claim: str
    expect: str
    check: Callable[[Report], bool]
    probe: str
    variant: str

    @property
    def label(self) -> str:
        return f"{self.probe} {self.variant}"


def _both_consumers_delivered_all(r: Report) -> bool:
    """Two consumers of one group, each with deliveries, nothing lost."""
    by = r["delivered_by"]
    return len(by) == 2 and min(by.values()) > 0 and r["lost"] == 0


def _second_group_read_all(r: Report) -> bool:
    """The second group read every confirmed message, and the first lost none."""
    return bool(r["replayed"] == r["confirmed"] > 0 and r["lost"] == 0)


MATRIX: tuple[Row, ...] = (
    Row(
        "Kafka: order is kept per partition (per key)",
        "reordered == 0",
        lambda r: r["reordered"] == 0,
        "kafka",
        "at-least-once",
        "none",
    ),
    Row(
        "Kafka: messages are stored in files, so not lost (acks=all, idempotent producer)",
        "lost == 0 across a broker SIGKILL",
        lambda r: r["lost"] == 0,
        "kafka",
        "at-least-once",
        "broker-kill",
    ),
    Row(
        "Consumer: the same message can arrive twice (offsets committed after processing)",
        "duplicate effects > 0 after a consumer kill",
        lambda r: r["duplicate_effects"] > 0,
        "kafka",
        "at-least-once",
        "consumer-kill",
        kill_after=510,
    ),
    Row(
        "Kafka: consumers can re-read (replay) at any time",
        "a group that did not exist during the run reads every confirmed message",
        lambda r: r["replayed"] == r["confirmed"] > 0,
        "kafka",
        "at-least-once",
        "none",
        workload="replay",
    ),
    Row(
        "Kafka: scales by partitions and consumers (the members of a group split the partitions)",
        "both consumers of the group deliver, nothing lost (64 keys over 4 partitions)",
        _both_consumers_delivered_all,
        "kafka",
        "at-least-once",
        "none",
        consumers=2,
        keys=64,
    ),
    Row(
        "Kafka: very high throughput",
        "one producer at an unbounded rate has >= 30 000 msg/s confirmed with acks=all, all "
        "delivered (the pub/s column puts it beside the other transports' runs)",
        lambda r: r["publish_per_s"] >= 30_000 and r["lost"] == 0,
        "kafka",
        "at-least-once",
        "none",
        messages=30_000,
        rate=0.0,
    ),
    Row(
        "Kafka at-most-once (commit before handling): a consumer crash loses messages",
        "lost > 0, duplicate effects == 0",
        lambda r: r["lost"] > 0 and r["duplicate_effects"] == 0,
        "kafka",
        "at-most-once",
        "consumer-kill",
        kill_after=510,
        # a backlog, so that each fetch is a full prefetch of 200 committed at once (at 1500
        # msg/s the consumer keeps up, fetches a few at a time and may lose none: measured)
        rate=0.0,
        # what was lost never comes; the replacement consumer is in within the 6 s session
        drain_quiet_s=12.0,
    ),
    Row(
        "RabbitMQ: durable quorum queue + persistent + confirms loses nothing confirmed",
        "lost == 0 across a broker SIGKILL",
        lambda r: r["lost"] == 0,
        "rabbitmq",
        "at-least-once",
        "broker-kill",
    ),
    Row(
        "RabbitMQ: messages kept in memory only (transient, no confirms) can be lost",
        "lost + unconfirmed lost > 0 across a broker SIGKILL",
        lambda r: r["lost"] + r["unconfirmed_lost"] > 0,
        "rabbitmq",
        "at-most-once",
        "broker-kill",
        rate=1500.0,
        drain_quiet_s=6.0,  # what was lost never comes; a RabbitMQ consumer is back in ~1 s
    ),
    Row(
        "RabbitMQ: messages are delivered in queue order",
        "reordered == 0 (one consumer)",
        lambda r: r["reordered"] == 0 and r["delivered"] > 0,
        "rabbitmq",
        "at-least-once",
        "none",
    ),
    Row(
        "RabbitMQ: pub/sub (every queue bound to the exchange, i.e. every group, gets every "
        "message)",
        "a second group subscribed alongside reads every confirmed message, nothing lost",
        _second_group_read_all,
        "rabbitmq",
        "at-least-once",
        "none",
        workload="fanout",
    ),
    Row(
        "RabbitMQ: request/response (each request answered on a reply topic, same id)",
        "every confirmed request gets its reply (round trip: second_group_latency_ms)",
        _second_group_read_all,
        "rabbitmq",
        "at-least-once",
        "none",
        workload="request-reply",
    ),
    Row(
        "RabbitMQ: push model, a slow consumer lets the queue (and latency) grow",
        "p99 latency > 1 s with a consumer slower than the publish rate",
        lambda r: r["latency_ms"]["p99"] > 1000,
        "rabbitmq",
        "at-least-once",
        "none",
        workload="slow-consumer",
        messages=600,
        rate=600.0,
    ),
    Row(
        "Consumer: an error during processing causes a redelivery (killed before its ack)",
        "lost == 0 and duplicate effects > 0",
        lambda r: r["lost"] == 0 and r["duplicate_effects"] > 0,
        "rabbitmq",
        "at-least-once",
        "consumer-kill",
        kill_after=510,
    ),
    Row(
        "Redis pub/sub: low latency (memory)",
        "p99 latency < 50 ms at 1500 msg/s, nothing lost",
        lambda r: r["latency_ms"]["p99"] < 50 and r["lost"] == 0,
        "redis-pubsub",
        "at-most-once",
        "none",
    ),
    Row(
        "Redis pub/sub: messages are lost when there is no subscriber",
        "lost == confirmed",
        lambda r: r["confirmed"] > 0 and r["lost"] == r["confirmed"],
        "redis-pubsub",
        "at-most-once",
        "none",
        workload="no-subscriber",
    ),
    Row(
        "Redis pub/sub: no persistence, a broker kill loses what was in flight",
        "lost + unconfirmed lost > 0",
        lambda r: r["lost"] + r["unconfirmed_lost"] > 0,
        "redis-pubsub",
        "at-most-once",
        "broker-kill",
    ),
    Row(
        "Redis Streams + AOF (appendfsync always): every confirmed XADD survives a kill",
        "lost == 0 across a broker SIGKILL",
        lambda r: r["lost"] == 0,
        "redis-streams",
        "at-least-once",
        "broker-kill",
    ),
    Row(
        "Publisher: a message can be lost when the producer dies with sends in flight",
        "some sends end unknown or unsent (the producer's share is not all confirmed)",
        lambda r: r["confirmed"] < r["scenario"]["messages"],
        "redis-streams",
        "at-least-once",
        "producer-kill",
    ),
    Row(
        "Kafka (safe settings): a network blackhole loses nothing confirmed (0 or duplicates)",
        "lost == 0 across 5 s of dropped traffic (Toxiproxy)",
        lambda r: r["lost"] == 0,
        "kafka",
        "at-least-once",
        "blackhole",
        down_s=5.0,
    ),
)

THREE_RELAYS: dict[str, Any] = {
    "relays": 3,
    "rate": 0.0,  # as fast as the producer commits: every relay has rows at once
    "messages": 3000,
    "keys": 48,  # each relay owns about a third of them
    "warmup_s": 3.0,  # the relays share the keys out before the first commit (~1 s a step)
}

PATTERNS: tuple[Row, ...] = (
    Row(
        "Publisher: send only after the transaction has committed; a dual write (commit, then "
        "publish) loses what a crash catches in between",
        "lost > 0 and phantom == 0 when the producer dies between its commit and its publish",
        lambda r: r["lost"] > 0 and r["phantom"] == 0,
        "kafka",
        "at-least-once",
        "producer-kill",
        pattern="dual-write",
        drain_quiet_s=5.0,  # what was lost never comes; no consumer rejoins
    ),
    Row(
        "Publisher: the dual write the other way round (publish, then commit) delivers what a "
        "crash catches in between, though its business transaction never committed",
        "phantom > 0 and lost == 0 when the producer dies between its publish and its commit",
        lambda r: r["phantom"] > 0 and r["lost"] == 0,
        "kafka",
        "at-least-once",
        "producer-kill",
        pattern="publish-then-commit",
        drain_quiet_s=5.0,  # nothing confirmed is missing; no consumer rejoins
    ),
    Row(
        "Transactional outbox: the message is stored with the business change, so a producer "
        "crash loses nothing committed and publishes nothing uncommitted",
        "lost == 0 and phantom == 0 when the producer dies right after its commit",
        lambda r: r["lost"] == 0 and r["phantom"] == 0 and r["confirmed"] > 0,
        "kafka",
        "at-least-once",
        "producer-kill",
        pattern="outbox",
    ),
    Row(
        "Transactional outbox + idempotent consumer: a relay killed between publish and mark "
        "sends one batch again, and the dedup table applies it once (effectively once)",
        f"lost == 0, 0 < duplicate deliveries <= one relay batch ({RELAY_BATCH}), duplicate "
        "effects == 0",
        lambda r: (
            r["lost"] == 0
            and 0 < r["duplicate_deliveries"] <= RELAY_BATCH
            and r["duplicate_effects"] == 0
        ),
        "kafka",
        "effectively-once",
        "relay-kill",
        pattern="outbox",
    ),
    Row(
        "Transactional outbox, three relays: each owns a share of the keys (advisory locks), "
        "so a key's messages leave in commit order, also when a relay dies and the others take "
        "its keys over",
        "lost == 0 and reordered == 0 with 3 relays, one killed between publish and mark",
        lambda r: r["lost"] == 0 and r["reordered"] == 0 and r["confirmed"] > 0 and r["faults"],
        "kafka",
        "at-least-once",
        "relay-kill",
        pattern="outbox",
        **THREE_RELAYS,
    ),
    Row(
        "Transactional outbox, three naive relays (FOR UPDATE SKIP LOCKED): each takes the next "
        "unlocked rows, so two relays publish one key's rows at once and the later can land "
        "first",
        "reordered > 0 (the order per key is lost), lost == 0",
        lambda r: r["reordered"] > 0 and r["lost"] == 0,
        "kafka",
        "at-least-once",
        "relay-kill",
        pattern="outbox",
        **THREE_RELAYS,
        relay_ordering="skip-locked",
    ),
    Row(
        "CDC (Debezium): the database publishes committed changes in commit order",
        "every committed outbox row delivered once, reordered == 0",
        lambda r: r["lost"] == 0 and r["reordered"] == 0 and r["duplicate_deliveries"] == 0,
        "kafka",
        "at-least-once",
        "none",
        pattern="cdc",
        rate=500.0,  # Debezium + Connect kept up with ~950 msg/s here; beyond, a lag builds
    ),
    Row(
        "Table CDC (Debezium): the business table's own changes, no outbox, reach the consumer "
        "in commit order, decoded into the messages sent",
        "every committed row delivered once, reordered == 0",
        lambda r: r["lost"] == 0 and r["reordered"] == 0 and r["duplicate_deliveries"] == 0,
        "kafka",
        "at-least-once",
        "none",
        pattern="table-cdc",
        rate=500.0,  # the cdc row's workload
    ),
    Row(
        "Outbox relay (msglab's, woken on commit): the same committed rows as the two CDC rows "
        "above, published without Kafka Connect",
        "every committed outbox row delivered once, reordered == 0",
        lambda r: r["lost"] == 0 and r["reordered"] == 0 and r["duplicate_deliveries"] == 0,
        "kafka",
        "at-least-once",
        "none",
        pattern="outbox",
        rate=500.0,  # the cdc rows' workload: their latency and throughput side by side
    ),
    Row(
        "Consumer: an idempotent consumer (dedup row in the effect's transaction) applies a "
        "redelivered message once",
        "duplicate deliveries > 0 after a consumer kill, duplicate effects == 0, lost == 0",
        lambda r: r["duplicate_deliveries"] > 0 and r["duplicate_effects"] == 0 and r["lost"] == 0,
        "kafka",
        "effectively-once",
        "consumer-kill",
        kill_after=510,
    ),
)

FILES: tuple[Row, ...] = (
    Row(
        "Batch exchange through files (temporary name, fsync, atomic rename, manifest): a "
        "producer crash leaves no half batch for the consumer",
        "lost == 0, nothing unexpected or duplicated after a producer SIGKILL",
        lambda r: r["lost"] == 0 and r["unexpected"] == 0 and r["duplicate_deliveries"] == 0,
        "files",
        "at-least-once",
        "producer-kill",
    ),
    Row(
        "Batch exchange through files: a consumer that marks a batch done when it takes it "
        "(at-most-once) loses the rest of the batch in a crash",
        "lost > 0 and duplicate effects == 0 after a consumer kill inside a batch",
        lambda r: r["lost"] > 0 and r["duplicate_effects"] == 0,
        "files",
        "at-most-once",
        "consumer-kill",
        kill_after=500,  # a batch file holds 30 messages at 1500 msg/s: 500 is inside one
        drain_quiet_s=5.0,
    ),
    Row(
        "Batch exchange through files: a damaged batch file (garbled or cut) is quarantined with "
        "its reason, named, not silently lost; every other batch flows",
        "lost == quarantined == the damaged batch's messages > 0, one batch quarantined, nothing "
        "duplicated",
        lambda r: (
            0
            < r["lost"]
            == r["quarantined"]
            == sum(b["messages"] for b in r["faults"] if "ids" in b)
            and len(r["quarantined_batches"]) == 1
            and r["duplicate_deliveries"] == 0
        ),
        "files",
        "at-least-once",
        "corrupt",
        kill_after=500,
        drain_quiet_s=5.0,  # the damaged batch never comes
    ),
)


def _figure(r: Report, key: str) -> Any:
    return r["figures"][key]


PROBES_QUICK: tuple[Probe, ...] = (
    Probe(
        "Concurrency: a read-modify-write without a lock loses updates",
        "lost updates > 0 (4 threads increment one counter)",
        lambda r: _figure(r, "lost_updates") > 0,
        "concurrency",
        "read-modify-write",
    ),
    Probe(
        "Concurrency: an atomic increment in SQL (n = n + 1) loses none",
        "lost updates == 0",
        lambda r: _figure(r, "lost_updates") == 0,
        "concurrency",
        "atomic-increment",
    ),
    Probe(
        "Concurrency: optimistic locking with a version column loses none (conflicts retried)",
        "lost updates == 0 and conflicts > 0",
        lambda r: _figure(r, "lost_updates") == 0 and _figure(r, "conflicts_retried") > 0,
        "concurrency",
        "optimistic-version",
    ),
    Probe(
        "Global transactions / 2PC: long (two-phase) commits lower concurrency",
        "two-phase transfers/s below one-phase's (4 workers, one hot row per database)",
        lambda r: (
            r["figures"]["two_phase"]["transfers_per_s"]
            < r["figures"]["one_phase"]["transfers_per_s"]
        ),
        "two-phase-commit",
        "compare",
    ),
)

PROBES_FULL: tuple[Probe, ...] = (
    Probe(
        "Kafka: scales by brokers (partition leaders spread the load over the brokers)",
        f"each broker capped at {QUOTA_BYTES_PER_S / 1e6:g} MB/s: 4 partitions on 2 brokers "
        "carry >= 1.4x what 4 partitions on 1 broker carry",
        lambda r: _figure(r, "capped_ratio") >= 1.4,
        "scaling",
        "kafka-brokers",
    ),
    Probe(
        "Hygiene: retry only reads, connection failures and idempotent writes; a call that "
        "timed out may have succeeded: reconcile (or use an idempotency key) before retrying",
        "a write whose reply was lost ends unknown, reconciliation finds it stored once, and a "
        "blind retry stores it twice",
        lambda r: (
            r["figures"]
            == {"outcome": "unknown", "copies_found_on_reconcile": 1, "copies_after_blind_retry": 2}
        ),
        "hygiene",
        "lost-reply",
    ),
    Probe(
        "Hygiene: circuit breaker (closed / open / half-open) fails fast while a dependency is "
        "down, and closes again after it is back",
        "calls refused at once (< 1 ms) while open, and the final state is closed",
        lambda r: (
            _figure(r, "refused_at_once") > 0
            and _figure(r, "max_refused_ms") < 1.0
            and _figure(r, "final_state") == "closed"
        ),
        "hygiene",
        "circuit-breaker",
    ),
    Probe(
        "Concurrency: SELECT ... FOR UPDATE serialises a read-modify-write (no lost update)",
        "lost updates == 0",
        lambda r: _figure(r, "lost_updates") == 0,
        "concurrency",
        "select-for-update",
    ),
    Probe(
        "Concurrency: a distributed lock on Redis (wait timeout, always released) serialises a "
        "read-modify-write",
        "lost updates == 0",
        lambda r: _figure(r, "lost_updates") == 0,
        "concurrency",
        "redis-lock",
    ),
    Probe(
        "Concurrency: locking two rows in opposite orders deadlocks",
        "deadlocks > 0",
        lambda r: _figure(r, "deadlocks") > 0,
        "concurrency",
        "lock-order-opposite",
    ),
    Probe(
        "Concurrency: locking in a fixed order avoids deadlocks",
        "deadlocks == 0",
        lambda r: _figure(r, "deadlocks") == 0,
        "concurrency",
        "lock-order-fixed",
    ),
    Probe(
        "Hygiene: connection timeout 3-5 s (read timeout 5-30 s): an unreachable broker fails "
        "within it, naming host:port",
        "every client fails within 5.5 s and its error names host:port",
        lambda r: all(
            v["seconds_to_fail"] <= 5.5 and v["names_address"]
            for k, v in r["figures"].items()
            if isinstance(v, dict)
        ),
        "hygiene",
        "connect-timeout",
    ),
    Probe(
        "Hygiene: a bulkhead refuses work over capacity (503) instead of letting a slow "
        "dependency take every worker",
        "refused > 0 and never more than the limit inside",
        lambda r: (
            _figure(r, "refused_503") > 0 and _figure(r, "peak_inside") <= _figure(r, "limit")
        ),
        "hygiene",
        "bulkhead",
    ),
)


def _stored_none_lost(r: Report) -> bool:
    return bool(r["lost_from_storage"] == 0)


def _stored_some_lost(r: Report) -> bool:
    return bool(r["lost_from_storage"])


BROKER_PRICE: dict[str, Any] = {"price_batch": 100, "price_messages": 20_000}
TRANSACTION_PRICE: dict[str, Any] = {"price_batch": 1, "price_messages": 1000}  # an order each
FILES_PRICE: dict[str, Any] = {"price_batch": 10, "price_messages": 2000}  # a file per batch
"""What a power-cut row's settings cost: its publish rate without a fault (``Row.price_batch``),
in the batches a client of that kind sends."""

POWER_CUTS: tuple[Row, ...] = (
    Row(
        "Redis, AOF appendfsync always: a power cut loses no confirmed write (Redis docs)",
        "lost from storage == 0 across a power cut",
        _stored_none_lost,
        "redis-streams",
        "at-least-once",
        "power-cut",
        sets=("appendfsync=always",),
        **BROKER_PRICE,
    ),
    Row(
        "Redis, AOF appendfsync everysec: a power cut loses about the last second of writes "
        "(Redis docs)",
        "lost from storage <= 2 s of messages (one fsync interval, and the cut's timing)",
        lambda r: r["lost_from_storage"] <= 2 * r["scenario"]["rate"],
        "redis-streams",
        "at-least-once",
        "power-cut",
        sets=("appendfsync=everysec",),
        **BROKER_PRICE,
    ),
    Row(
        "Redis, AOF appendfsync no: a power cut loses what the OS had not written (up to ~30 s "
        "on Linux; here: everything since the server last synced)",
        "lost from storage > 0 across a power cut",
        _stored_some_lost,
        "redis-streams",
        "at-least-once",
        "power-cut",
        sets=("appendfsync=no",),
        **BROKER_PRICE,
    ),
    Row(
        "Kafka stores messages in files, so they are not lost: on a single node with the "
        "default flush (never fsync; the docs leave durability to replication) a power cut "
        "loses acknowledged messages",
        "lost from storage > 0 across a power cut (acks=all, one broker)",
        _stored_some_lost,
        "kafka",
        "at-least-once",
        "power-cut",
        **BROKER_PRICE,
    ),
    Row(
        "Kafka on a single node with log.flush.interval.messages=1 (the broker fsyncs a "
        "partition's log after every append, before it acknowledges): a power cut loses "
        "nothing acknowledged",
        "lost from storage == 0 across a power cut (acks=all, one broker, a flush per message)",
        _stored_none_lost,
        "kafka",
        "at-least-once",
        "power-cut",
        sets=("log.flush.interval.messages=1",),
        **BROKER_PRICE,
    ),
    Row(
        "RabbitMQ quorum queue + publisher confirms: a confirm means the message was fsynced "
        "(Ra's WAL), so a power cut loses nothing confirmed",
        "lost from storage == 0 across a power cut",
        _stored_none_lost,
        "rabbitmq",
        "at-least-once",
        "power-cut",
        **BROKER_PRICE,
    ),
    Row(
        "RabbitMQ durable classic queue + persistent messages + publisher confirms: the broker "
        "confirms a persistent message once it is on disk (RabbitMQ docs), so a power cut loses "
        "nothing confirmed",
        "lost from storage == 0 across a power cut",
        _stored_none_lost,
        "rabbitmq",
        "at-least-once",
        "power-cut",
        sets=("queue-type=classic",),
        **BROKER_PRICE,
    ),
    Row(
        "RabbitMQ: messages kept in memory only (transient, classic queue, no confirms) are "
        "gone after a power cut",
        "lost from storage == confirmed: nothing of the queue is kept",
        lambda r: r["confirmed"] > 0 and r["lost_from_storage"] == r["confirmed"],
        "rabbitmq",
        "at-most-once",
        "power-cut",
        **BROKER_PRICE,
    ),
    Row(
        "Outbox on PostgreSQL, synchronous_commit on: a commit is on disk, a power cut of the "
        "database loses no committed message",
        "lost from the database == 0 and lost == 0 across a power cut of PostgreSQL",
        lambda r: r["lost_from_storage"] == 0 and r["lost"] == 0,
        "kafka",
        "at-least-once",
        "db-power-cut",
        pattern="outbox",
        sets=("synchronous_commit=on",),
        **TRANSACTION_PRICE,
    ),
    Row(
        "Outbox on PostgreSQL, synchronous_commit off: a power cut loses the last commits (up "
        "to 3 x wal_writer_delay, PostgreSQL docs), nothing is corrupted",
        "lost from the database > 0 across a power cut of PostgreSQL; it comes back",
        lambda r: r["lost_from_storage"] > 0,
        "kafka",
        "at-least-once",
        "db-power-cut",
        pattern="outbox",
        sets=("synchronous_commit=off",),
        **TRANSACTION_PRICE,
    ),
    Row(
        "Files, at-least-once: a batch counts as sent once its file is fsynced and renamed, "
        "so a power cut of the folder's machine loses no confirmed message",
        "lost from storage == 0 across a power cut of the folder (workers killed with it)",
        _stored_none_lost,
        "files",
        "at-least-once",
        "power-cut",
        **FILES_PRICE,
    ),
    Row(
        "Files, at-most-once: nothing is fsynced, so a power cut of the folder's machine "
        "loses what the folder had not written back (here: everything since it was mounted)",
        "lost from storage > 0 across a power cut of the folder (workers killed with it)",
        _stored_some_lost,
        "files",
        "at-most-once",
        "power-cut",
        **FILES_PRICE,
    ),
)


def _kept_all(r: Report) -> bool:
    """Nothing acknowledged lost in any run, by the consumers' count or the cluster's."""
    return bool(r["lost"] == 0 and r["lost_from_storage"] == 0)


def _lost_some(r: Report) -> bool:
    """Acknowledged messages lost from what the cluster kept, in at least one run."""
    return bool(r["lost_from_storage"])


CLUSTER: dict[str, Any] = {"cluster": True, "messages": 6000, "rate": 1500, "kill_after": 2000}
"""A cluster row: 6000 messages at 1500/s, the fault after 2000 (1.3 s in)."""
SENTINEL_ROW: dict[str, Any] = {**CLUSTER, "messages": 15000, "down_s": 8.0, "repeat": 2}
"""A Redis Sentinel partition row: 15,000 messages (10 s), the primary cut off for 8 s of
them, so that writes go on past a failover and past ``min-replicas-max-lag``."""

CLUSTERS: tuple[Row, ...] = (
    Row(
        "Kafka cluster, acks=1: a leader that dies may take acknowledged messages with it "
        "(the followers had not fetched them)",
        "lost from storage > 0 in some run (one producer: often 0)",
        _lost_some,
        "kafka",
        "at-least-once",
        "leader-kill",
        sets=("acks=1",),
        repeat=4,
        published="K1: 80 of 846,117 acknowledged lost with 10 producers, 0 with one "
        "(Kafka 2.0, RF 3; J. Vanlightly, How to Lose Messages on a Kafka Cluster, 2018)",
        **CLUSTER,
    ),
    Row(
        "Kafka cluster, acks=all: a leader that dies loses nothing acknowledged",
        "lost == 0 and lost from storage == 0 in every run",
        _kept_all,
        "kafka",
        "at-least-once",
        "leader-kill",
        sets=("acks=all",),
        repeat=4,
        published="K2: 0 of 801,679 acknowledged lost (Kafka 2.0, RF 3; Vanlightly 2018)",
        **CLUSTER,
    ),
    Row(
        "Kafka cluster, acks=1: a leader cut off from the other nodes while its clients still "
        "write to it acknowledges what the new leader never gets",
        "lost from storage > 0 in some run",
        _lost_some,
        "kafka",
        "at-least-once",
        "partition",
        sets=("acks=1",),
        repeat=4,
        down_s=10.0,
        published="K3: acks=1, 35,588 of 95,513 acknowledged lost (a ~15 s window); acks=all "
        "0 (Kafka 2.0; Vanlightly 2018)",
        **CLUSTER,
    ),
    Row(
        "Kafka cluster, acks=all: a leader cut off from the other nodes cannot acknowledge "
        "alone (min.insync.replicas 2): the producers wait, nothing acknowledged is lost",
        "lost == 0 and lost from storage == 0 in every run",
        _kept_all,
        "kafka",
        "at-least-once",
        "partition",
        sets=("acks=all",),
        repeat=4,
        down_s=10.0,
        published="K3: acks=all, 0 lost (Vanlightly 2018)",
        **CLUSTER,
    ),
    Row(
        "Kafka cluster, acks=all: a leader cut off from everyone (clients too) is replaced; "
        "nothing acknowledged is lost",
        "lost == 0 and lost from storage == 0 in every run",
        _kept_all,
        "kafka",
        "at-least-once",
        "partition",
        sets=("acks=all",),
        partition="leader-and-clients",
        repeat=4,
        down_s=10.0,
        **CLUSTER,
    ),
    Row(
        "Kafka cluster, acks=all: a leader frozen (SIGSTOP, a long GC pause) loses nothing "
        "acknowledged when it wakes",
        "lost == 0 and lost from storage == 0 in every run",
        _kept_all,
        "kafka",
        "at-least-once",
        "pause",
        sets=("acks=all",),
        repeat=4,
        down_s=10.0,
        **CLUSTER,
    ),
    Row(
        "Kafka cluster, acks=all: one node (not the leader) loses power; the others hold every "
        "acknowledged message (replication, not fsync, keeps it)",
        "lost == 0 and lost from storage == 0 in every run",
        _kept_all,
        "kafka",
        "at-least-once",
        "power-cut",
        sets=("acks=all",),
        cut="one",
        repeat=2,
        published="K6: Kafka's docs leave durability to replication (no fsync by default); "
        "KIP-966 Eligible Leader Replicas (on in 4.1) keeps acknowledged data when up to "
        "min.insync.replicas - 1 replicas shut down uncleanly",
        **CLUSTER,
    ),
    Row(
        "Kafka cluster, acks=all, default flush: every node loses power at once (one rack, one "
        "feed); what no node had fsynced is gone though all three acknowledged it",
        "lost from storage > 0 in some run",
        _lost_some,
        "kafka",
        "at-least-once",
        "power-cut",
        sets=("acks=all",),
        cut="all",
        repeat=2,
        published="K5: an acknowledged record lost cluster-wide when replicas lose their "
        "unflushed tail (Redpanda, Why fsync(), 2023, redpanda-data/kafka-fsync)",
        **CLUSTER,
    ),
    Row(
        "Kafka cluster, acks=all, log.flush.interval.messages=1: every node loses power at "
        "once; each broker fsynced every message before acknowledging it, nothing is lost",
        "lost == 0 and lost from storage == 0 in every run",
        _kept_all,
        "kafka",
        "at-least-once",
        "power-cut",
        sets=("acks=all", "log.flush.interval.messages=1"),
        cut="all",
        repeat=2,
        published="K5/K6: flushing every message closes the window the default leaves to "
        "replication (Redpanda, Why fsync(), 2023; Kafka docs)",
        **CLUSTER,
    ),
    Row(
        "RabbitMQ cluster, quorum queue + publisher confirms: the queue leader's node killed, "
        "nothing confirmed is lost (Raft: a confirm is a majority's fsync)",
        "lost == 0 and lost from storage == 0 in every run",
        _kept_all,
        "rabbitmq",
        "at-least-once",
        "leader-kill",
        repeat=4,
        published="R3: RabbitMQ's own Jepsen tests of quorum queues fail on any lost "
        "confirmed message: 0 lost promised (github rabbitmq/jepsen)",
        **CLUSTER,
    ),
    Row(
        "RabbitMQ cluster, quorum queue + confirms: the queue leader cut off from the other "
        "nodes (pause_minority pauses it), nothing confirmed is lost",
        "lost == 0 and lost from storage == 0 in every run",
        _kept_all,
        "rabbitmq",
        "at-least-once",
        "partition",
        repeat=4,
        down_s=15.0,
        published="R3: 0 lost promised under partitions (github rabbitmq/jepsen)",
        **CLUSTER,
    ),
    Row(
        "RabbitMQ cluster, quorum queue + confirms: the queue leader frozen (SIGSTOP) loses "
        "nothing confirmed when it wakes",
        "lost == 0 and lost from storage == 0 in every run",
        _kept_all,
        "rabbitmq",
        "at-least-once",
        "pause",
        repeat=4,
        down_s=10.0,
        **CLUSTER,
    ),
    Row(
        "Redis Sentinel: a primary cut off from its replicas and the other Sentinels, while its "
        "clients still write to it, acknowledges writes the new primary never gets; the heal "
        "makes it a replica and they are gone",
        "lost from storage > 0 in some run",
        _lost_some,
        "redis-streams",
        "at-least-once",
        "partition",
        published="D1: 56 % of acknowledged writes lost with the primary partitioned from the "
        "majority (Redis + Sentinel, 5 nodes; K. Kingsbury, Call me maybe: Redis, 2013)",
        **SENTINEL_ROW,
    ),
    Row(
        "Redis Sentinel, min-replicas-to-write 1 (max lag 2 s): the cut-off primary refuses "
        "writes once no replica answered for 2 s; what it acknowledged before is still lost",
        "lost from storage > 0 in some run, and seconds with nothing acknowledged > 2 (the "
        "primary refused writes: NOREPLICAS, retried until the new primary took them)",
        lambda r: r["lost_from_storage"] > 0 and r["unavailable_s"] > 2,
        "redis-streams",
        "at-least-once",
        "partition",
        sets=("min-replicas-to-write=1", "min-replicas-max-lag=2"),
        published="D2: min-replicas-to-write bounds the window of acknowledged writes a "
        "failover loses, it does not close it (Redis docs: replication, Sentinel)",
        **SENTINEL_ROW,
    ),
    Row(
        "Redis Sentinel, WAIT 1 after each write: the cut-off primary's writes get no "
        "replica's answer, so none is confirmed (the producer retries them on the new "
        "primary); nothing acknowledged is lost, for the seconds WAIT blocks",
        "lost == 0 and lost from storage == 0 in every run",
        _kept_all,
        "redis-streams",
        "at-least-once",
        "partition",
        sets=("wait=1",),
        published="D2: WAIT 'does not make Redis a strongly consistent store': a write one "
        "replica has is lost if another is promoted (Redis docs, WAIT)",
        **SENTINEL_ROW,
    ),
)
"""``msglab compare --clusters``: faults of a replicated cluster's nodes, each row beside the
published result it stands for (docs/guarantees.md)."""


def _poison_dead_lettered_and_others_on_time(r: Report) -> bool:
    """The poison message dead-lettered after its three attempts (delivered three times: no
    crash loop), nothing lost, and p99 latency within 2x of the same run without it."""
    poison = r["poison"]
    return bool(
        poison["dead_lettered"]
        and poison["attempts"] == poison["deliveries"] == 3
        and r["lost"] == 0
        and r["latency_ms"]["p99"] <= 2 * r["baseline"]["latency_ms"]["p99"]
    )


RUNTIME: tuple[Row, ...] = tuple(
    row
    for transport in ("kafka", "rabbitmq", "redis-streams", "files")
    for row in (
        Row(
            f"Runtime on {transport}: a poison message is dead-lettered with its reason after its "
            "attempts, while the other messages flow on time",
            "dead-lettered after 3 attempts (3 deliveries), lost == 0, p99 <= 2x the run without",
            _poison_dead_lettered_and_others_on_time,
            transport,
            "at-least-once",
            "none",
            workload="poison",
            baseline=True,
        ),
        Row(
            f"Runtime on {transport}: a graceful stop (SIGTERM to every consumer) loses nothing "
            "and delivers nothing twice",
            "lost == 0 and duplicate deliveries == 0 across a stop and a restart",
            lambda r: r["lost"] == 0 and r["duplicate_deliveries"] == 0,
            transport,
            "at-least-once",
            "consumer-stop",
            kill_after=500,
        ),
    )
)
"""The App runtime's rows (``compare --full``): what ``msglab worker`` does with a poison message
and on a deploy's SIGTERM, and its exactly-once Kafka pipeline under a consumer and a broker
kill."""

EXACTLY_ONCE: tuple[Row, ...] = tuple(
    Row(
        f"Runtime on kafka: an exactly-once pipeline (read, copy to <topic>-out, commit the "
        f"offsets in the same transaction) keeps every message once across a {what}",
        "every confirmed message exactly once in <topic>-out read_committed after the run",
        lambda r: r["lost_from_output"] == 0 and r["output_duplicates"] == 0,
        "kafka",
        "exactly-once",
        fault,
        kill_after=510,
        drain_quiet_s=60.0,  # a commit hung by a broker kill is given up after 35 s
    )
    for fault, what in (
        ("consumer-kill", "consumer SIGKILL mid-transaction"),
        ("broker-kill", "broker SIGKILL"),
    )
)

QUICK: tuple[Row | Probe, ...] = (*MATRIX, *PATTERNS, *FILES, *PROBES_QUICK)

FULL: tuple[Row | Probe, ...] = (
    *QUICK,
    *PROBES_FULL,
    *POWER_CUTS,
    *RUNTIME,
    *EXACTLY_ONCE,
    Row(
        "RabbitMQ (safe settings): a network blackhole brings redeliveries, not loss",
        "lost == 0 across 5 s of dropped traffic (Toxiproxy)",
        lambda r: r["lost"] == 0,
        "rabbitmq",
        "at-least-once",
        "blackhole",
        down_s=5.0,
    ),
    Row(
        "Redis Streams (safe settings): a network blackhole duplicates, it does not lose",
        "lost == 0 across 5 s of dropped traffic (Toxiproxy)",
        lambda r: r["lost"] == 0,
        "redis-streams",
        "at-least-once",
        "blackhole",
        down_s=5.0,
    ),
    Row(
        "Already seen: a RabbitMQ 3.10 quorum queue killed < 0.5 s after its declaration loses "
        "what it confirmed and stays leaderless",
        "lost > 0 or the producer stalls",
        lambda r: r["lost"] > 0 or r["confirmed"] < r["scenario"]["messages"],
        "rabbitmq",
        "at-least-once",
        "broker-kill",
        kill_after=100,
        warmup_s=0.0,
    ),
    Row(
        "RabbitMQ default settings (transient, no confirms): a network blackhole loses messages",
        "lost + unconfirmed lost > 0 across 5 s of dropped traffic",
        lambda r: r["lost"] + r["unconfirmed_lost"] > 0,
        "rabbitmq",
        "at-most-once",
        "blackhole",
        down_s=5.0,
    ),
    Row(
        "Redis pub/sub: a network blackhole loses what was in flight",
        "lost + unconfirmed lost > 0 across 5 s of dropped traffic",
        lambda r: r["lost"] + r["unconfirmed_lost"] > 0,
        "redis-pubsub",
        "at-most-once",
        "blackhole",
        down_s=5.0,
    ),
    Row(
        "RabbitMQ (the contrast to Kafka's replay): a queue bound after the fact gets nothing",
        "a group that did not exist during the run reads nothing",
        lambda r: r["replayed"] == 0 and r["confirmed"] > 0,
        "rabbitmq",
        "at-least-once",
        "none",
        workload="replay",
    ),
    Row(
        "RabbitMQ: point-to-point (the consumers of one queue share its messages)",
        "both consumers of the group deliver, each message once, nothing lost",
        lambda r: _both_consumers_delivered_all(r) and r["duplicate_deliveries"] == 0,
        "rabbitmq",
        "at-least-once",
        "none",
        consumers=2,
    ),
    Row(
        "Kafka: pull model, a slow consumer only falls behind; the producer keeps its pace",
        "publish rate >= 90 % of the 600 msg/s asked, lost == 0, p99 latency > 1 s (lag)",
        lambda r: r["publish_per_s"] >= 540 and r["lost"] == 0 and r["latency_ms"]["p99"] > 1000,
        "kafka",
        "at-least-once",
        "none",
        workload="slow-consumer",
        messages=600,
        rate=600.0,
    ),
    Row(
        "A slow network (300 ms each way for 5 s) delays deliveries and loses nothing",
        "p99 latency > 300 ms and lost == 0",
        lambda r: r["latency_ms"]["p99"] > 300 and r["lost"] == 0,
        "kafka",
        "at-least-once",
        "latency",
        down_s=5.0,
    ),
    Row(
        "Transactional outbox, relay without dedup: a relay killed between publish and mark "
        "duplicates at most one batch",
        f"lost == 0 and 0 < duplicate effects <= one relay batch ({RELAY_BATCH})",
        lambda r: r["lost"] == 0 and 0 < r["duplicate_effects"] <= RELAY_BATCH,
        "kafka",
        "at-least-once",
        "relay-kill",
        pattern="outbox",
    ),
    Row(
        "Outbox relay marking before it publishes (at-most-once): a relay crash loses the batch",
        "lost > 0 and duplicate effects == 0",
        lambda r: r["lost"] > 0 and r["duplicate_effects"] == 0,
        "kafka",
        "at-most-once",
        "relay-kill",
        pattern="outbox",
        drain_quiet_s=5.0,
    ),
    Row(
        "Transactional outbox: a database crash during the writes loses nothing committed "
        "(transactions that failed are retried with the same ids, stored once)",
        "lost == 0 across a PostgreSQL SIGKILL",
        lambda r: r["lost"] == 0 and r["confirmed"] > 0,
        "kafka",
        "at-least-once",
        "db-kill",
        pattern="outbox",
    ),
    Row(
        "Eventual consistency: through an outbox, every committed change reaches the consumer, "
        "later (the lag is the latency), even across a broker kill",
        "lost == 0 across a RabbitMQ SIGKILL, p99 latency > p50",
        lambda r: r["lost"] == 0 and r["latency_ms"]["p99"] > r["latency_ms"]["p50"],
        "rabbitmq",
        "at-least-once",
        "broker-kill",
        pattern="outbox",
    ),
    Row(
        "Batch exchange through files: a consumer that records progress after its effects "
        "(at-least-once) redoes part of a batch after a crash, it loses nothing",
        "lost == 0 and duplicate effects > 0 after a consumer kill inside a batch",
        lambda r: r["lost"] == 0 and r["duplicate_effects"] > 0,
        "files",
        "at-least-once",
        "consumer-kill",
        kill_after=500,
    ),
    Row(
        "CDC (Debezium): a Kafka Connect crash re-sends what came since the last offset flush "
        f"(every {OFFSET_FLUSH_INTERVAL_MS} ms), it loses nothing committed",
        "lost == 0 and 0 < duplicate deliveries <= 3 s of messages (flush interval + the kill's "
        "timing)",
        lambda r: r["lost"] == 0 and 0 < r["duplicate_deliveries"] <= 3 * r["scenario"]["rate"],
        "kafka",
        "at-least-once",
        "connect-kill",
        pattern="cdc",
        rate=1000.0,
        down_s=1.0,
    ),
)
