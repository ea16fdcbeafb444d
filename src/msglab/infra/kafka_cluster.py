"""``kafka-cluster``: three Apache Kafka KRaft nodes, each a combined broker and controller.

The same Kafka as ``kafka`` (the same jars in the cache), three JVMs: node ``n<i>`` is KRaft
node ``i`` on 127.0.1.i, its PLAINTEXT listener on the ``kafka`` port and its CONTROLLER
listener on the ``kafka_controller`` port of that address; it advertises that address only, and
the three are one static controller quorum (``controller.quorum.voters``), so that every byte
between two nodes goes between their two addresses. One cluster id (``<home>/kafka-cluster/
cluster.id``) formats the three storages.

Replication as a production cluster has it: ``default.replication.factor=3``,
``min.insync.replicas=2``, the internal topics (offsets, transaction state, share state) with 3
replicas and a min ISR of 2, ``unclean.leader.election.enable=false``. Eligible Leader Replicas
(KIP-966) is what the version does by default: Kafka 4.1 and later turn it on for a new cluster (its
storage format writes ``eligible.leader.replicas.version=1``; 4.0 left it off); ``KafkaCluster(
settings, elr=False)`` formats a new cluster without it (``elr=True``: with it, on any version).
``set_setting("eligible.leader.replicas.version", "0")`` turns it off on a running cluster
(Kafka's UpdateFeatures, as ``kafka-features downgrade`` does), ``"1"`` on again.

How the cluster is seen, without a client driver and without a JVM, over Kafka's own protocol
(``probes``): a node has joined when its broker lists itself among the live brokers (Metadata:
registered and unfenced, so a controller leader exists); the roles come from DescribeQuorum
sent to each running node's controller listener: the leader answers with the voters and the
observers, the others answer that they are not the leader. A status costs one small request
per node (milliseconds), not a JVM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from msglab.infra import probes
from msglab.infra.cluster import Cluster
from msglab.infra.kafka import (
    ELR_FEATURE,
    KAFKA_VERSION,
    Kafka,
    broker_properties,
    new_cluster_id,
)
from msglab.settings import Settings

HEAP = ("-Xms256m", "-Xmx384m")
NODE_JAVA_OPTS = (*HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true")
PROBE_TIMEOUT_S = 1.0

REPLICATION = (
    "default.replication.factor=3",
    "min.insync.replicas=2",
    "offsets.topic.replication.factor=3",
    "transaction.state.log.replication.factor=3",
    "transaction.state.log.min.isr=2",
    "share.coordinator.state.topic.replication.factor=3",
    "share.coordinator.state.topic.min.isr=2",
    "unclean.leader.election.enable=false",
)
"""Three replicas of everything, two of them in sync for a write to be acknowledged."""

CONTROLLER_LEADER = "controller-leader"
CONTROLLER_FOLLOWER = "controller-follower"
BROKER = "broker"  # an observer of the quorum: a node that is a broker only
UNKNOWN = "unknown"  # running, but no controller answers as the quorum's leader


class KafkaNode(Kafka):
    """One node of ``kafka-cluster``: broker and controller, KRaft node ``index``, on its own
    address, with the cluster's replication settings."""

    java_opts = NODE_JAVA_OPTS

    def __init__(self, cluster: KafkaCluster, node: str, index: int, host: str) -> None:
        super().__init__(cluster.settings, name=f"{cluster.name}/{node}", host=host)
        self.cluster = cluster
        self.node_id = index

    @property
    def port(self) -> int:
        return self.settings.ports["kafka"]

    @property
    def owned_ports(self) -> Mapping[str, int]:
        return {"kafka": self.port, "kafka_controller": self.controller_port}

    def _properties(self) -> str:
        listeners = f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:"
        listeners += str(self.controller_port)
        return broker_properties(
            [
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                f"controller.quorum.voters={self.cluster.voters}",
                f"listeners={listeners}",
                f"advertised.listeners={listeners}",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.data_dir.resolve()}",
            ],
            REPLICATION,
        )

    def prepare(self) -> bool:
        self._write_config()
        if (self.data_dir / "meta.properties").exists():
            return False
        options = []
        if self.cluster.elr is not None:
            options = ["--feature", f"{ELR_FEATURE}={int(self.cluster.elr)}"]
        self._format(self.cluster.cluster_id(), *options)
        return True


class KafkaCluster(Cluster[KafkaNode]):
    """Three KRaft nodes on 127.0.1.1-3 (see the module). ``elr``: Eligible Leader Replicas
    for a cluster formatted now (None: the version's default, on since Kafka 4.1)."""

    name = "kafka-cluster"
    subnet = "127.0.1"

    def __init__(self, settings: Settings, elr: bool | None = None) -> None:
        self.elr = elr
        super().__init__(settings)

    def make_node(self, node: str, index: int, host: str) -> KafkaNode:
        return KafkaNode(self, node, index, host)

    @property
    def url(self) -> str:
        return ",".join(svc.address for svc in self.nodes.values())  # bootstrap.servers

    @property
    def voters(self) -> str:
        """``controller.quorum.voters``: every node's id@address:controller port."""
        return ",".join(
            f"{svc.node_id}@{svc.host}:{svc.controller_port}" for svc in self.nodes.values()
        )

    def version(self) -> str | None:
        return KAFKA_VERSION

    def cluster_id(self) -> str:
        """The cluster's id: kept in ``cluster.id``, else taken from a node already formatted
        (a node formatted anew joins its peers), else new."""
        path = self.root / "cluster.id"
        if path.exists():
            return path.read_text().strip()
        found = [cid for svc in self.nodes.values() if (cid := svc.cluster_id())]
        cid = found[0] if found else new_cluster_id()
        self.root.mkdir(parents=True, exist_ok=True)
        path.write_text(cid + "\n")
        return cid

    def missing(self, nodes: Sequence[str]) -> dict[str, str]:
        why = {}
        for node in nodes:
            svc = self.nodes[node]
            brokers = probes.kafka_brokers(svc.host, svc.port, PROBE_TIMEOUT_S)
            if brokers is None:
                why[node] = f"its broker does not answer at {svc.address}"
            elif svc.node_id not in brokers:
                why[node] = (
                    f"broker {svc.node_id} is not registered and unfenced "
                    f"(live brokers: {sorted(brokers) or 'none'})"
                )
        if not why and self.leader() is None:
            return {node: "no controller leader answers" for node in nodes}
        return why

    def read_settings(self, keys: Sequence[str]) -> dict[str, str]:
        """Cluster-wide settings (dynamic configs, features), as one running node has them."""
        return next(iter(self.running().values())).read_settings(keys)

    def set_setting(self, key: str, value: str) -> None:
        """Once, for the whole cluster, through one running node (which waits until it has it
        in force; the others get it from the same KRaft metadata). Kafka keeps it, across
        restarts too."""
        next(iter(self.running().values())).set_setting(key, value)

    def leader(self) -> probes.Quorum | None:
        """The quorum as its leader describes it, asking each running node's controller
        listener (a node that is not the leader says so at once); the newest epoch wins if two
        nodes both still think they lead."""
        claims = []
        for svc in self.nodes.values():
            if svc.pid() is None:
                continue
            quorum = probes.kafka_quorum(svc.host, svc.controller_port, PROBE_TIMEOUT_S)
            if quorum is not None and quorum.leader == svc.node_id:
                claims.append(quorum)
        return max(claims, key=lambda q: q.epoch, default=None)

    def leader_of(self, name: str) -> tuple[str, str] | None:
        """The node leading the most partitions of topic ``name`` now (the lowest partition
        breaks a tie), as the first running node that knows the topic answers, and why."""
        for svc in self.nodes.values():
            if svc.pid() is None:
                continue
            found = probes.kafka_metadata(svc.host, svc.port, PROBE_TIMEOUT_S, [name])
            if found is None or name not in found.leaders:
                continue
            led: dict[int, list[int]] = {}
            for partition, leader in sorted(found.leaders[name].items()):
                if leader >= 0:
                    led.setdefault(leader, []).append(partition)
            if not led:
                return None
            node_id = max(led, key=lambda n: (len(led[n]), -led[n][0]))
            node = next(n for n, s in self.nodes.items() if s.node_id == node_id)
            partitions = ", ".join(map(str, led[node_id]))
            return node, (
                f"leader of partition(s) {partitions} of {name} "
                f"({len(found.leaders[name])} partitions), as {svc.name} answered"
            )
        return None

    def roles(self) -> dict[str, str | None]:
        quorum = self.leader()
        roles: dict[str, str | None] = {}
        for node, svc in self.nodes.items():
            if svc.pid() is None:
                roles[node] = None
            elif quorum is None:
                roles[node] = UNKNOWN
            elif svc.node_id == quorum.leader:
                roles[node] = CONTROLLER_LEADER
            elif svc.node_id in quorum.voters:
                roles[node] = CONTROLLER_FOLLOWER
            elif svc.node_id in quorum.observers:
                roles[node] = BROKER
            else:
                roles[node] = UNKNOWN
        return roles
