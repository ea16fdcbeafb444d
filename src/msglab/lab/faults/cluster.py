"""Faults of a replicated cluster's nodes (``msglab run --cluster``): the leader killed, paused or
cut off by a network partition. Each acts on the node that leads the run's topic at that moment,
read from the cluster, and records which node it hit and why that one."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any, ClassVar

from msglab.errors import NotRunningError
from msglab.infra import process
from msglab.infra.cluster import Cluster
from msglab.infra.netrules import CLIENTS
from msglab.lab.faults.base import BROKER, Context, Fault
from msglab.lab.workers.spec import led_of

if TYPE_CHECKING:
    from msglab.lab.scenario import Scenario

PARTITIONS: dict[str, str] = {
    "leader": "the leader loses the other nodes; its clients still reach it",
    "leader-and-clients": "the leader loses every other node and every client",
    "halves": "the leader and one other node on one side, the third node on the other; the "
    "clients reach both",
}
"""What ``--partition`` cuts (``--fault partition``)."""


class ClusterFault(Fault):
    """A fault of one node of the run's cluster, the leader of the run's topic when it fires
    (``leader_of``: the node leading most of its partitions on Kafka). The orchestrator fires it
    after ``kill_after`` sends and heals it after ``down_s``; what the cluster kept is read after
    the run (``lost_from_storage``)."""

    signals_server: ClassVar[bool] = True

    def refusal(self, scenario: Scenario) -> str | None:
        if not scenario.cluster:
            return f"{self.name} acts on a cluster's nodes: add --cluster"
        return super().refusal(scenario)

    def service(self, scenario: Scenario) -> str | None:
        return scenario.service

    def fired_by_orchestrator(self, scenario: Scenario) -> bool:
        return True

    def storage(self, scenario: Scenario) -> str | None:
        return BROKER

    @staticmethod
    def cluster(ctx: Context) -> Cluster[Any]:
        service = ctx.scenario.service
        assert service is not None  # --cluster: the transport's cluster
        return ctx.infra.cluster(service)

    def target(self, ctx: Context, node: str) -> str:
        return f"{ctx.scenario.service}/{node}"


def leader(ctx: Context) -> tuple[str, str]:
    """The node leading the run's topic (or its consumers' queue) now, and why that one."""
    cluster = ClusterFault.cluster(ctx)
    led = led_of(ctx.scenario.transport, ctx.scenario.run_id)
    found = cluster.leader_of(led)
    if found is None:
        first = next(iter(cluster.nodes))
        return first, f"no node led {led}: the first node"
    return found


CUTS: dict[str, str] = {
    "leader": "the node leading the run's topic",
    "one": "one node that does not lead it",
    "all": "every node at once (correlated power loss)",
}
"""Whose power ``--fault power-cut --cluster`` cuts (``--cut``)."""


def cut_nodes(ctx: Context) -> tuple[list[str], str]:
    """The nodes ``--cut`` names, and why those."""
    node, why = leader(ctx)
    nodes = list(ClusterFault.cluster(ctx).nodes)
    if ctx.scenario.cut == "all":
        return nodes, f"every node ({node}: {why})"
    if ctx.scenario.cut == "one":
        other = next(n for n in nodes if n != node)
        return [other], f"not the leader ({node}: {why})"
    return [node], why


class LeaderKill(ClusterFault):
    name: ClassVar[str] = "leader-kill"
    does: ClassVar[str] = (
        "SIGKILL the node leading the run's topic after `kill_after` sends, restart it after "
        "`down_s` (--cluster)"
    )
    simulated: ClassVar[str | None] = (
        "process kill of the leader's node: the OS page cache survives, so this is not a power cut"
    )

    def inject(self, ctx: Context) -> None:
        node, why = leader(ctx)
        # a node may be several processes (redis-sentinel: its Redis server and its Sentinel)
        victims = self.cluster(ctx).kill([node])
        more = {"pids": [pid for _, pid in victims]} if len(victims) > 1 else {}
        ctx.memo[self.name] = node
        ctx.log.record(
            self.name,
            "kill",
            self.target(ctx, node),
            node=node,
            why=why,
            pid=victims[0][1],
            signal="SIGKILL",
            **more,
        )

    def heal(self, ctx: Context) -> None:
        node = ctx.memo.pop(self.name, None)
        if node is None:
            return
        report = self.cluster(ctx).restart([node])
        ctx.after_restart(str(ctx.scenario.service))
        ctx.log.record(
            self.name, "restart", self.target(ctx, node), seconds=round(report.seconds, 3)
        )


class Pause(ClusterFault):
    name: ClassVar[str] = "pause"
    does: ClassVar[str] = (
        "SIGSTOP the node leading the run's topic after `kill_after` sends, SIGCONT it after "
        "`down_s` (--cluster): a node frozen by a long GC or a stalled VM"
    )

    def inject(self, ctx: Context) -> None:
        node, why = leader(ctx)
        pids = self.cluster(ctx).processes(node)
        if not pids:
            raise NotRunningError(f"{self.target(ctx, node)} does not run: nothing to pause")
        for p in pids:
            process.send(p, signal.SIGSTOP)
        ctx.memo[self.name] = (node, pids)
        ctx.log.record(
            self.name,
            "stop",
            self.target(ctx, node),
            node=node,
            why=why,
            pids=pids,
            signal="SIGSTOP",
        )

    def heal(self, ctx: Context) -> None:
        held = ctx.memo.pop(self.name, None)
        if held is None:
            return
        node, pids = held
        for p in pids:
            process.send(p, signal.SIGCONT)
        ctx.log.record(self.name, "start", self.target(ctx, node), pids=pids, signal="SIGCONT")


class Partition(ClusterFault):
    name: ClassVar[str] = "partition"
    does: ClassVar[str] = (
        "cut the node leading the run's topic off with nftables rules after `kill_after` sends "
        "(--partition: " + "; ".join(f"{k}: {v}" for k, v in PARTITIONS.items()) + "), heal "
        "after `down_s` (--cluster)"
    )

    def inject(self, ctx: Context) -> None:
        node, why = leader(ctx)
        cluster = self.cluster(ctx)
        hosts = cluster.hosts()
        others = [n for n in hosts if n != node]
        side_a, side_b = {
            "leader": ([node], others),
            "leader-and-clients": ([node], others),
            "halves": ([node, others[0]], others[1:]),
        }[ctx.scenario.partition]
        with_clients = ctx.scenario.partition == "leader-and-clients"
        rules = cluster.net.cut(
            [hosts[n] for n in side_a],
            [hosts[n] for n in side_b] + ([CLIENTS] if with_clients else []),
            list(hosts.values()),
        )
        ctx.memo[self.name] = node
        ctx.log.record(
            self.name,
            "cut",
            self.target(ctx, node),
            node=node,
            why=why,
            partition=ctx.scenario.partition,
            sides=[side_a, side_b + (["clients"] if with_clients else [])],
            rules=rules,
        )

    def heal(self, ctx: Context) -> None:
        node = ctx.memo.pop(self.name, None)
        if node is None:
            return
        self.cluster(ctx).net.heal()
        ctx.log.record(self.name, "heal", self.target(ctx, node))


FAULTS: tuple[Fault, ...] = (LeaderKill(), Pause(), Partition())
