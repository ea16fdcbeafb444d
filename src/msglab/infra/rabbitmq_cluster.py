"""``rabbitmq-cluster``: three RabbitMQ nodes (the Debian 3.10 of ``rabbitmq``) in one cluster.

Node ``n<i>`` is the Erlang node ``rabbit@127.0.2.i`` (long names: the address is the host part),
on 127.0.2.i only: AMQP on the ``rabbitmq`` port, the distribution (nodes and CLI tools) on the
``rabbitmq_dist`` port. The three share one Erlang cookie (``<home>/rabbitmq-cluster/
.erlang.cookie``, mode 0400, the nodes' HOME).

No epmd. Erlang's port mapper cannot be one per address: started with ``-address 127.0.2.i`` it
binds 127.0.0.1 and ::1 on its port too (so a second one on the same port exits), and a node
registers only with the epmd of 127.0.0.1. So the nodes run epmd-less (``-erl_epmd_port``: every
node's distribution is on the same port of its own address, which is where a peer looks for
it); the only thing between two nodes is then their distribution connection, which a partition
(``netrules``) cuts, and nothing outlives a node. RabbitMQ's epmd monitor still tries to start
an epmd every minute: ``ERL_FLAGS=-start_epmd false`` makes that a no-op. The CLI tools reach a
node the same way and listen nowhere (``-dist_listen false``), so a command whose answer other
nodes send straight to the tool (``list_queues`` without ``--local``, ``list_connections``)
times out: ``RabbitMQNode.queues`` lists the queues a node leads (``--local``).

Formation: classic config peer discovery. ``n1`` lists no peers and initialises the cluster at
once; ``n2`` and ``n3`` list the three nodes and, holding RabbitMQ's formation lock in turn, join
the first peer that runs (retrying for the start timeout), so that nodes spawned together form
one cluster, never two. Peer discovery runs only on a blank node: a node restarted after a kill
or a ``down`` rejoins its cluster from its own database.

Replication and partitions: quorum queues get 3 replicas (``quorum_cluster_size``, 3 too by
default; ``x-quorum-initial-group-size`` per queue). ``cluster_partition_handling =
pause_minority``, the mode RabbitMQ's partition guide recommends for three nodes or more: a node
that sees itself in a minority stops its RabbitMQ application (its clients are disconnected and
cannot reconnect to it) until it sees the majority again, then starts it again and takes the
majority's state; ``autoheal`` would keep both sides writable and throw away the losing side's
changes, ``ignore`` (the default) needs a person. Quorum queues follow Raft either way.
``net_ticktime`` is 10 s (60 by default) so that a cut-off node is seen down within 10-13 s.

Small memory: ``vm_memory_high_watermark.absolute = 512MiB`` per node (publishers are blocked
above it, cluster-wide), ``raft.wal_max_size_bytes`` 64 MB (512 by default: the write-ahead
log's entries stay in memory until it rolls over), at most 131072 Erlang processes and 1M
atoms (5M by default).

How the cluster is seen, with RabbitMQ's CLI tools (about 0.5 s a call, an Erlang VM each):
``missing`` and ``roles`` probe each node's AMQP port (milliseconds) and ask one node that
answers which nodes run (its own database's view, see ``running_nodes``): one call. RabbitMQ
has no cluster leader: a node is a ``member``, ``paused`` or ``unreachable`` (see ``roles``);
``queue_leader`` names the node that leads one quorum queue (``rabbitmq-queues
quorum_status``).
"""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

from msglab.errors import NotRunningError
from msglab.infra.cluster import Cluster
from msglab.infra.rabbitmq import Queue, RabbitMQ

NET_TICKTIME_S = 10
DISCOVERY_INTERVAL_MS = 500
CTL_TIMEOUT_S = 8.0
RUNNING_NODES = "rabbit_nodes:all_running()."

MEMBER = "member"  # its RabbitMQ runs and the cluster counts it among its running nodes
PAUSED = "paused"  # its process runs, its RabbitMQ does not (a paused minority, or starting)
UNREACHABLE = "unreachable"  # answers its clients, but the cluster does not count it running
UNKNOWN = "unknown"  # running, but no node says which nodes run

TUNING = (
    "vm_memory_high_watermark.absolute = 512MiB",
    "raft.wal_max_size_bytes = 64000000",
    "cluster_partition_handling = pause_minority",
    "cluster_name = msglab-rabbitmq-cluster",
)


class RabbitMQNode(RabbitMQ):
    """One node of ``rabbitmq-cluster``: ``rabbit@<host>``, on its own address, epmd-less."""

    def __init__(self, cluster: RabbitMQCluster, node: str, index: int, host: str) -> None:
        super().__init__(cluster.settings, name=f"{cluster.name}/{node}", host=host)
        self.cluster = cluster
        self.index = index

    @property
    def port(self) -> int:
        return self.settings.ports["rabbitmq"]

    @property
    def dist_port(self) -> int:
        return self.settings.ports["rabbitmq_dist"]

    @property
    def owned_ports(self) -> Mapping[str, int]:
        return {"rabbitmq": self.port, "rabbitmq_dist": self.dist_port}

    @property
    def node(self) -> str:
        return f"rabbit@{self.host}"

    def env(self) -> dict[str, str]:
        interface = "{" + self.host.replace(".", ",") + "}"
        epmd_less = f"-start_epmd false -erl_epmd_port {self.dist_port}"
        env = super().env()
        del env["ERL_EPMD_ADDRESS"]
        return {
            **env,
            "HOME": str(self.cluster.root),  # the cluster's cookie
            "RABBITMQ_USE_LONGNAME": "true",
            "ERL_EPMD_PORT": "0",  # never any epmd's (the one of ``rabbitmq`` included)
            "ERL_FLAGS": "-start_epmd false",  # every erl a node starts: no epmd
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                f"-name {self.node} {epmd_less} -kernel inet_dist_use_interface {interface} "
                f"-kernel net_ticktime {NET_TICKTIME_S} -rabbit quorum_cluster_size 3"
            ),
            "RABBITMQ_CTL_ERL_ARGS": f"{epmd_less} -dist_listen false",
            "RABBITMQ_MAX_NUMBER_OF_PROCESSES": "131072",
            "RABBITMQ_MAX_NUMBER_OF_ATOMS": "1048576",
        }

    def _config(self) -> list[str]:
        peers = []
        if self.index > 1:  # n1 forms the cluster; the others join it
            retries = int(self.settings.start_timeout_s * 1000 / DISCOVERY_INTERVAL_MS)
            peers = [
                *(
                    f"cluster_formation.classic_config.nodes.{i} = {svc.node}"
                    for i, svc in enumerate(self.cluster.nodes.values(), start=1)
                ),
                f"cluster_formation.discovery_retry_limit = {retries}",
                f"cluster_formation.discovery_retry_interval = {DISCOVERY_INTERVAL_MS}",
            ]
        return [
            *super()._config(),
            "cluster_formation.peer_discovery_backend = classic_config",
            *peers,
            *TUNING,
        ]

    def prepare(self) -> bool:
        self.cluster.write_cookie()
        return super().prepare()

    def before_start(self) -> None:
        """No epmd (see the module)."""

    def after_stop(self) -> None:
        """No epmd to stop."""

    def queues(self) -> list[Queue]:
        """The queues of the default virtual host this node leads (``list_queues --local``: a
        CLI tool cannot gather the other nodes' answers, see the module)."""
        found = self.ctl("list_queues", "--local", "name", "type", "durable")
        return [Queue(q["name"], q["type"], q["durable"]) for q in found]


class RabbitMQCluster(Cluster[RabbitMQNode]):
    """Three RabbitMQ nodes on 127.0.2.1-3 (see the module). ``url`` is each node's AMQP URL,
    comma-separated, for a client that tries them in turn (pika:
    ``BlockingConnection([URLParameters(u) for u in url.split(",")])``)."""

    name = "rabbitmq-cluster"
    subnet = "127.0.2"

    def make_node(self, node: str, index: int, host: str) -> RabbitMQNode:
        return RabbitMQNode(self, node, index, host)

    @property
    def url(self) -> str:
        return ",".join(svc.url for svc in self.nodes.values())

    @property
    def cookie_path(self) -> Path:
        return self.root / ".erlang.cookie"

    def write_cookie(self) -> None:
        """The cluster's Erlang cookie, made once (32 random capitals), readable by root only."""
        path = self.cookie_path
        if path.exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(32))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(cookie)

    def cookie(self) -> str:
        """The cluster's Erlang cookie, made first when missing (the compose backend gives it
        to its nodes)."""
        self.write_cookie()
        return self.cookie_path.read_text()

    def _by_erlang_name(self) -> dict[str, str]:
        return {svc.node: node for node, svc in self.nodes.items()}

    def _answering(self) -> list[str]:
        """The nodes whose process runs and whose AMQP port answers, in order."""
        return [
            node
            for node, svc in self.nodes.items()
            if svc.pid() is not None and svc.ping(min(self.settings.connect_timeout_s, 1.0))
        ]

    def running_nodes(self, ask: Sequence[str]) -> tuple[str, set[str]] | None:
        """The nodes the cluster counts as running, as the first of ``ask`` that answers sees
        them: (that node, the nodes); None when none answers. Asked with ``rabbitmqctl eval
        'rabbit_nodes:all_running().'``, which reads the node's own database: ``cluster_status``
        also asks every running node for its listeners and alarms, and so blocks until a node
        cut off is seen down (``net_ticktime``)."""
        names = self._by_erlang_name()
        for node in ask:
            try:
                found = self.nodes[node].ctl("eval", RUNNING_NODES, timeout_s=CTL_TIMEOUT_S)
            except NotRunningError:
                continue
            return node, {names[n] for n in found.get("value", []) if n in names}
        return None

    def missing(self, nodes: Sequence[str]) -> dict[str, str]:
        answering = self._answering()
        why = {
            node: f"its AMQP port does not answer at {self.nodes[node].address}"
            for node in nodes
            if node not in answering
        }
        if why:
            return why
        # a node already in the cluster knows best who has joined it
        ask = sorted(answering, key=lambda n: n in nodes)
        seen = self.running_nodes(ask)
        if seen is None:
            return {node: "no node says which nodes run (rabbitmqctl eval)" for node in nodes}
        asked, running = seen
        return {
            node: f"not a running node of the cluster as {self.name}/{asked} sees it "
            f"(running: {', '.join(sorted(running)) or 'none'})"
            for node in nodes
            if node not in running
        }

    def roles(self) -> dict[str, str | None]:
        """Each node: None (no process), ``paused`` (its process runs, its RabbitMQ does not
        answer: the minority of a partition, paused, or a node starting), ``member`` (counted
        running by the first node that answers), ``unreachable`` (answers its clients but is not
        counted running: cut off, not paused yet) or ``unknown`` (no node answers). Within
        ``net_ticktime`` of a cut, the nodes still count a node cut off as running."""
        answering = self._answering()
        seen = self.running_nodes(answering)
        roles: dict[str, str | None] = {}
        for node, svc in self.nodes.items():
            if svc.pid() is None:
                roles[node] = None
            elif node not in answering:
                roles[node] = PAUSED
            elif seen is None:
                roles[node] = UNKNOWN
            else:
                roles[node] = MEMBER if node in seen[1] else UNREACHABLE
        return roles

    def quorum_status(self, queue: str) -> dict[str, str]:
        """Each member of quorum queue ``queue`` (default virtual host) and its Raft state
        (``leader``, ``follower``, ...), as the first node that answers reports it.
        NotRunningError when no node answers or the queue is not a quorum queue there."""
        names = self._by_erlang_name()
        errors = []
        for node in self._answering():
            try:
                rows = self.nodes[node].ctl(
                    "quorum_status", queue, tool="rabbitmq-queues", timeout_s=CTL_TIMEOUT_S
                )
            except NotRunningError as exc:
                errors.append(str(exc))
                continue
            return {names.get(r["Node Name"], r["Node Name"]): str(r["Raft State"]) for r in rows}
        raise NotRunningError(
            f"{self.name}: no node reports quorum queue {queue!r}"
            + (f" ({'; '.join(errors)})" if errors else ": none answers")
        )

    def leader_of(self, name: str) -> tuple[str, str] | None:
        """The node leading quorum queue ``name`` now, and why."""
        node = self.queue_leader(name)
        return None if node is None else (node, f"leader of quorum queue {name}")

    def queue_leader(self, queue: str) -> str | None:
        """The node (``n2``) that leads quorum queue ``queue`` now, None while it has none."""
        leaders = [n for n, state in self.quorum_status(queue).items() if state == "leader"]
        return leaders[0] if len(leaders) == 1 else None
