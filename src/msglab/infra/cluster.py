"""Replicated clusters: one service made of nodes, each a real server of its own.

A ``Cluster`` (``kafka-cluster``) has nodes ``n1``, ``n2``, ``n3`` (``settings.CLUSTER_NODES``).
Each node is a ``NativeService`` named ``<cluster>/<node>``: its own folder
``<home>/<cluster>/<node>/`` (data, log, pid, config; its own lazy filesystem with ``--lazyfs``)
and its own loopback address, ``<subnet>.<i>`` (node ``n2`` of ``kafka-cluster`` on 127.0.1.2),
where it binds and advertises every listener, on the same port numbers as its peers. The nodes
talk to each other through those addresses only, so that a network fault between two nodes is
a rule on two addresses. Because a connection a node opens leaves from 127.0.0.1, the node is
also known by its processes' group id (``node_group``), which ``netrules`` matches; while the
cluster runs, msglab's nftables table marks each connection with the group that opened it, so
that a partition cuts both directions of every link.

``up`` spawns every node, then waits until each answers and the cluster has formed (each node
joined, a leader elected: each kind of cluster says how it sees that, cheaply) within the start
timeout; else a ServerStartError names the node that did not join, with its log's last lines,
and every node this ``up`` spawned is killed. A fault hits one node (``kafka-cluster/n2``) or,
for kill and power cut, every node at once: a correlated crash or power loss. ``status`` is one
``Status`` per node, with the node's role in the cluster read from the cluster at that moment.
"""

from __future__ import annotations

import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import ClassVar, Generic, TypeVar

from msglab.errors import NotRunningError, ServerStartError, UsageError
from msglab.infra import netrules, process
from msglab.infra.lazyfs import CutReport, check_available
from msglab.infra.netrules import Host, NetRules
from msglab.infra.service import (
    NativeService,
    Starting,
    StartReport,
    Status,
    read_timings,
    record_timing,
)
from msglab.settings import CLUSTER_NODES, Settings, check_services

T = TypeVar("T")

N = TypeVar("N", bound=NativeService)
POLL_S = 0.2


class Cluster(ABC, Generic[N]):
    """A service of several nodes (see the module). Subclasses make the nodes and say how the
    cluster looks from outside: which nodes have joined (``missing``) and each one's ``roles``."""

    name: ClassVar[str]
    subnet: ClassVar[str]  # node i listens on f"{subnet}.{i}" (127.0.0.0/8 is all loopback)
    keeps_data: ClassVar[bool] = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home / self.name
        self.timings_path = self.root / "timings.json"
        self.nodes: dict[str, N] = {
            node: self.make_node(node, i, f"{self.subnet}.{i}")
            for i, node in enumerate(CLUSTER_NODES[self.name], start=1)
        }
        self.net = NetRules(settings.home, self.name)

    def hosts(self) -> dict[str, Host]:
        """Each node as ``netrules`` sees it: its address and its processes' group."""
        return {n: Host(svc.name, svc.host, svc.group) for n, svc in self.nodes.items()}

    # -- what each kind of cluster says ---------------------------------------------------

    @abstractmethod
    def make_node(self, node: str, index: int, host: str) -> N:
        """Node ``node`` (the ``index``-th, from 1), a server named ``<cluster>/<node>`` on
        ``host``."""

    @property
    @abstractmethod
    def url(self) -> str:
        """What a plain client of the whole cluster connects with."""

    @abstractmethod
    def missing(self, nodes: Sequence[str]) -> dict[str, str]:
        """Which of ``nodes`` have not joined the cluster, each with why ({} once they all
        have, a leader included); cheap: ``up`` asks several times a second."""

    @abstractmethod
    def roles(self) -> dict[str, str | None]:
        """Each node's role in the cluster at this moment, as the cluster sees it (None for a
        node that does not run)."""

    def leader_of(self, name: str) -> tuple[str, str] | None:
        """The node that leads ``name`` now (a Kafka topic, a RabbitMQ queue, ...), read from
        the cluster, and why that node; None when no node does."""
        raise UsageError(f"{self.name} cannot tell which node leads {name}")

    def version(self) -> str | None:
        return self.first.version()

    # -- run-time settings ------------------------------------------------------------------

    def running(self) -> dict[str, N]:
        """The nodes whose server runs now; NotRunningError when none does."""
        found = {n: svc for n, svc in self.nodes.items() if svc.pid() is not None}
        if not found:
            raise NotRunningError(f"{self.name} is not running: `msglab infra up {self.name}`")
        return found

    @property
    def keeps_settings(self) -> bool:
        """What ``set_setting`` set survives a node's restart."""
        return self.first.keeps_settings

    def setting(self, key: str) -> str:
        return self.read_settings([key])[key]

    def read_settings(self, keys: Sequence[str]) -> dict[str, str]:
        """Each of ``keys`` as the running nodes have it: one value when they agree, else each
        node's (``n1=1, n2=0``), so that a report shows a cluster whose nodes disagree."""
        per_node = {n: svc.read_settings(keys) for n, svc in self.running().items()}
        found = {}
        for key in keys:
            values = {n: got[key] for n, got in per_node.items()}
            agreed = len(set(values.values())) == 1
            found[key] = (
                next(iter(values.values()))
                if agreed
                else ", ".join(f"{n}={v}" for n, v in values.items())
            )
        return found

    def saved_setting(self, key: str) -> str:
        """What ``set_setting(key, ...)`` puts back, as the first running node has it."""
        return next(iter(self.running().values())).saved_setting(key)

    def set_setting(self, key: str, value: str) -> None:
        """Set ``key`` on every running node (a node restarted later starts with its own
        configuration: a run sets it again, ``Dials.reapply``)."""
        for svc in self.running().values():
            svc.set_setting(key, value)

    # -- nodes ------------------------------------------------------------------------------

    @property
    def first(self) -> N:
        return next(iter(self.nodes.values()))

    def node(self, node: str) -> N:
        """Node ``node`` (``n2``); UsageError listing the valid ones."""
        (name,) = check_services([f"{self.name}/{node}"], nodes=True)
        return self.nodes[name.partition("/")[2]]

    def _pick(self, nodes: Iterable[str] | None) -> dict[str, N]:
        """The nodes named (every node when None)."""
        if nodes is None:
            return dict(self.nodes)
        return {n: self.node(n) for n in nodes}

    def is_installed(self) -> bool:
        return self.first.is_installed()

    def check_running(self) -> None:
        """NotRunningError naming ``msglab infra up <cluster>`` when none of the nodes runs,
        read from their PID files (no network: at once). A cluster with a node down still
        serves its clients, which try the others."""
        if all(svc.pid() is None for svc in self.nodes.values()):
            raise NotRunningError(
                f"{self.name} is not running (none of its nodes runs): start it with "
                f"`msglab infra up {self.name}`"
            )

    def install(self) -> None:
        self.first.install()

    # -- lifecycle --------------------------------------------------------------------------

    def up(self, lazyfs: bool = False) -> StartReport:
        """Make every node run and the cluster form; idempotent. Nothing starts when a node's
        port is taken (PortInUseError naming the node); a node that exits, does not answer or
        does not join within the start timeout fails it all (ServerStartError naming the node,
        with its log's tail) and every node spawned here is killed."""
        for svc in self.nodes.values():
            if svc.pid() is None:
                svc.check_ports()
            elif lazyfs and not svc.disk.on_lazyfs():
                raise UsageError(
                    f"{svc.name} runs on the plain disk: `msglab infra down {self.name}`, "
                    "then up --lazyfs"
                )
        if lazyfs:
            check_available()
        if not self.is_installed():
            self.install()
        if netrules.available():  # every connection marked with its opener from the start
            self.net.prepare(list(self.hosts().values()))
        try:
            return self._start(self.nodes, lazyfs)
        except BaseException:
            if all(svc.pid() is None for svc in self.nodes.values()):
                self.net.remove()
            raise

    def _start(self, nodes: dict[str, N], lazyfs: bool) -> StartReport:
        """Spawn ``nodes`` (those not running), wait until they answer and have joined."""
        began = time.monotonic()
        deadline = began + self.settings.start_timeout_s
        starting: list[Starting] = []
        try:
            for svc in nodes.values():
                starting.append(svc.begin(lazyfs))
            pending = list(starting)
            while pending:
                pending = [s for s in pending if not s.poll()]
                if pending and time.monotonic() > deadline:
                    pending[0].time_out()
                time.sleep(POLL_S if pending else 0)
            self._wait_joined(list(nodes), deadline)
            reports = [s.done() for s in starting]
        except BaseException:
            for s in starting:
                s.abort()
            raise
        seconds = time.monotonic() - began
        started = any(r.started for r in reports)
        cold = any(r.cold for r in reports)
        label = self.name if len(nodes) == len(self.nodes) else self._label(nodes)
        if started and label == self.name:
            self._record_timing(cold, seconds)
        return StartReport(label, started=started, cold=cold, seconds=seconds if started else 0.0)

    def _label(self, nodes: Iterable[str]) -> str:
        return ", ".join(f"{self.name}/{n}" for n in nodes)

    def _wait_joined(self, nodes: list[str], deadline: float) -> None:
        while True:
            for node in nodes:  # a node that died after it answered
                svc = self.nodes[node]
                if svc.pid() is None:
                    svc._fail(f"{svc.name} exited while joining the cluster")
            why = self.missing(nodes)
            if not why:
                return
            if time.monotonic() > deadline:
                node, reason = next(iter(why.items()))
                svc = self.nodes[node]
                others = [f"{self.name}/{n}: {r}" for n, r in why.items() if n != node]
                raise ServerStartError(
                    f"{svc.name} did not join {self.name} within "
                    f"{self.settings.start_timeout_s:.0f}s: {reason}"
                    + (f" (also {'; '.join(others)})" if others else "")
                    + f" (log: {svc.log_path})",
                    process.log_tail(svc.log_path),
                )
            time.sleep(POLL_S)

    def down(self) -> bool:
        """Stop every node gracefully, all at once (one by one, the last ones would wait for a
        quorum that is gone); True if any was running. Data leaves the lazy filesystems, and
        msglab's nftables table (marks, and a partition a run left) goes."""
        stopped = any(_each(self.nodes.values(), lambda svc: svc.down()))
        self.net.remove()
        return stopped

    def processes(self, node: str) -> list[int]:
        """Every process of ``node`` now (its server and the server's children): what a pause
        freezes."""
        pid = self.node(node).pid()
        return [] if pid is None else [pid, *process.descendants(pid)]

    def kill(self, nodes: Iterable[str] | None = None) -> list[tuple[str, int]]:
        """SIGKILL the named nodes (every node when None) at once, as one crash; each node
        killed and its PID. NotRunningError when none of them runs."""
        picked = self._pick(nodes)
        victims = [(svc.name, pid) for svc in picked.values() if (pid := svc.pid()) is not None]
        if not victims:
            raise NotRunningError(f"{self._label(picked)}: not running; nothing to kill")
        for _, pid in victims:  # every signal first: no node outlives another by a wait
            process.send(pid, signal.SIGKILL)
        for _, pid in victims:
            process.crash(pid)
        return victims

    def power_cut(self, nodes: Iterable[str] | None = None) -> list[CutReport]:
        """Cut the power of the named nodes (every node when None) at once: each is frozen
        (SIGSTOP) first, so that none writes or fsyncs after another lost its power; then each
        is cut as a single server is (``NativeService.power_cut``). They stay down."""
        picked = list(self._pick(nodes).values())
        for svc in picked:
            svc.check_cuttable()
        for svc in picked:
            pid = svc.pid()
            if pid is not None:
                process.send(pid, signal.SIGSTOP)
        return [svc.power_cut() for svc in picked]

    def restart(self, nodes: Iterable[str] | None = None) -> StartReport:
        """Bring the named nodes (every node when None) back with their data, on the lazy
        filesystem if they were there (stopping those that run first), and wait until they
        have joined the cluster again."""
        picked = self._pick(nodes)
        _each(picked.values(), lambda svc: svc._stop())
        return self._start(picked, lazyfs=False)

    def status(self, nodes: Iterable[str] | None = None) -> list[Status]:
        """One row per node: its own server's status, the cluster's URL, its role now."""
        roles = self.roles()
        return [
            replace(svc.status(), service=self.name, node=node, role=roles.get(node), url=self.url)
            for node, svc in self._pick(nodes).items()
        ]

    def logs(self, nodes: Iterable[str] | None = None, lines: int = 40) -> str:
        picked = self._pick(nodes)
        if not any(svc.log_path.exists() for svc in picked.values()):
            raise NotRunningError(f"{self.name} has no log yet; run `msglab infra up {self.name}`")
        return "\n".join(
            f"==> {svc.name} ({svc.log_path}) <==\n{process.log_tail(svc.log_path, lines)}"
            for svc in picked.values()
        )

    def _record_timing(self, cold: bool, seconds: float) -> None:
        record_timing(self.timings_path, cold, seconds)

    def timings(self) -> dict[str, float]:
        """The whole cluster's last cold and warm start, every node spawned to formed."""
        return read_timings(self.timings_path)


def _each(items: Iterable[NativeService], action: Callable[[NativeService], T]) -> list[T]:
    """``action`` on every node at once (threads: each waits on its own process)."""
    todo = list(items)
    if not todo:
        return []
    with ThreadPoolExecutor(len(todo)) as pool:
        return list(pool.map(action, todo))
