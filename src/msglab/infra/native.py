"""The native backend: real servers as processes msglab owns, plus servers given by URL.

A name is a service (``kafka``), a cluster (``kafka-cluster``: every node) or one node of a
cluster (``kafka-cluster/n2``: kill, power-cut, restart, logs, status).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from typing import Any

from msglab.config import redact_url
from msglab.errors import ExternalServiceError, NotRunningError, ServerStartError, UsageError
from msglab.infra import external, netrules, process
from msglab.infra.cluster import Cluster
from msglab.infra.connect import Connect
from msglab.infra.kafka import Kafka, Kafka2
from msglab.infra.kafka_cluster import KafkaCluster
from msglab.infra.lazyfs import CutReport, check_available
from msglab.infra.lazyfs.disk import folder_disk
from msglab.infra.postgres import Postgres
from msglab.infra.rabbitmq import RabbitMQ
from msglab.infra.rabbitmq_cluster import RabbitMQCluster
from msglab.infra.redis import Redis
from msglab.infra.redis_sentinel import RedisSentinel
from msglab.infra.service import NativeService, StartReport, Status, apt_install
from msglab.infra.toxiproxy import Toxiproxy
from msglab.settings import CLUSTER_NODES, Settings, check_services, split_node

FILES_FOLDER = "files"  # the files transport's folder in MSGLAB_HOME (brokers.serverless_url)

SERVICE_TYPES: dict[str, type[NativeService]] = {
    "kafka": Kafka,
    "kafka2": Kafka2,
    "rabbitmq": RabbitMQ,
    "redis": Redis,
    "postgres": Postgres,
    "connect": Connect,
    "toxiproxy": Toxiproxy,
}
"""The services that are one server each."""

CLUSTER_TYPES: dict[str, type[Cluster[Any]]] = {
    "kafka-cluster": KafkaCluster,
    "rabbitmq-cluster": RabbitMQCluster,
    "redis-sentinel": RedisSentinel,
}
"""The services that are clusters of nodes (``settings.CLUSTER_NODES``)."""


class NativeBackend:
    """Installs, starts, kills and restarts msglab's own servers; probes external ones."""

    name = "native"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def service(self, name: str) -> NativeService:
        """The server ``name``: a service that is one server, or one node of a cluster
        (``kafka-cluster/n2``). UsageError for a cluster's bare name (it is several servers)."""
        (valid,) = check_services([name], nodes=True)
        service, node = split_node(valid)
        if service in CLUSTER_TYPES:
            if node is None:
                nodes = ", ".join(f"{service}/{n}" for n in CLUSTER_NODES[service])
                raise UsageError(f"{service} is a cluster: name one of its nodes ({nodes})")
            found: NativeService = self.cluster(service).node(node)
            return found
        return SERVICE_TYPES[service](self.settings)

    def cluster(self, name: str) -> Cluster[Any]:
        (valid,) = check_services([name])
        if valid not in CLUSTER_TYPES:
            raise UsageError(f"{valid} is not a cluster; clusters: {', '.join(CLUSTER_TYPES)}")
        return CLUSTER_TYPES[valid](self.settings)

    def _target(self, name: str) -> NativeService | Cluster[Any]:
        """What ``name`` stands for: a server (a service or a node), or a whole cluster."""
        (valid,) = check_services([name], nodes=True)
        return self.cluster(valid) if valid in CLUSTER_TYPES else self.service(valid)

    def _owned(self, name: str, action: str) -> NativeService | Cluster[Any]:
        url = self.settings.external.get(split_node(name)[0])
        if url is not None:
            raise ExternalServiceError(
                f"{name} is external ({redact_url(url)}): msglab does not own it and will not "
                f"{action} it"
            )
        return self._target(name)

    def url(self, name: str) -> str:
        """What a plain client of ``name`` connects with (a cluster: every node's address)."""
        target = self._target(name)
        return target.url

    def install(self, names: Iterable[str] = ()) -> list[str]:
        """Install what is missing; the names of the services installed now. Everything (no
        names) includes nftables, which network partitions need."""
        done, names = [], list(names)
        if not names and not netrules.available():
            netrules.install()
            done.append("nftables")
        for name in check_services(list(names)):
            if name in self.settings.external:
                continue
            svc = self._target(name)
            if not svc.is_installed():
                svc.install()
                done.append(name)
            if svc.keeps_data and shutil.which("fusermount3") is None:
                apt_install(["fuse3"])  # the lazy filesystem (up --lazyfs, power cuts)
                done.append("fuse3")
        return done

    def up(self, names: Iterable[str] = (), lazyfs: bool = False) -> list[StartReport]:
        """Start ``names`` (all when empty). ``lazyfs``: each server that keeps data runs on
        the lazy filesystem (a service named that keeps none is refused)."""
        named = list(names)
        if lazyfs:
            refused = [n for n in check_services(named) if not self._target(n).keeps_data]
            if refused:
                raise UsageError(f"--lazyfs: {', '.join(refused)} keep no data")
            check_available()
        reports = []
        for name in check_services(named):
            url = self.settings.external.get(name)
            if url is None:
                svc = self._target(name)
                reports.append(svc.up(lazyfs=lazyfs and svc.keeps_data))
            elif not external.status(name, url, self.settings.connect_timeout_s).healthy:
                raise ServerStartError(
                    f"{name} is external ({redact_url(url)}) and does not answer within "
                    f"{self.settings.connect_timeout_s:g} s"
                )
        return reports

    def down(self, names: Iterable[str] = ()) -> list[str]:
        """Stop gracefully, in reverse start order; the names that were running. Stopping
        everything (clusters included) also takes the files transport's folder off the lazy
        filesystem, where a power-cut run cut short may have left it."""
        stopped = []
        for name in reversed(check_services(list(names), on_demand=True)):
            if name not in self.settings.external and self._target(name).down():
                stopped.append(name)
        if not names:
            folder_disk(self.settings.home / FILES_FOLDER).leave()
            netrules.remove_all(self.settings.home)  # a partition a run cut short left
        return stopped

    def kill(self, name: str) -> int:
        """SIGKILL one server (a service or a node); its PID. A whole cluster: ``kill_all``."""
        target = self._owned(name, "kill")
        if isinstance(target, Cluster):
            raise UsageError(
                f"{name} is a cluster: kill one node ({name}/n1 ...) or every node (kill_all)"
            )
        return target.kill()

    def kill_all(self, name: str) -> list[tuple[str, int]]:
        """SIGKILL what ``name`` stands for, at once: a server, a node, or every node of a
        cluster (one correlated crash); each server killed with its PID."""
        target = self._owned(name, "kill")
        service, node = split_node(name)
        if isinstance(target, Cluster):
            return target.kill()
        if node is not None:  # through its cluster, which knows every process of a node
            return self.cluster(service).kill([node])
        return [(target.name, target.kill())]

    def power_cut(self, name: str) -> CutReport:
        """Cut the power of one server on the lazy filesystem (a service or a node); it stays
        down. A whole cluster: ``power_cut_all``."""
        target = self._owned(name, "power-cut")
        if isinstance(target, Cluster):
            raise UsageError(
                f"{name} is a cluster: cut one node ({name}/n1 ...) or every node (power_cut_all)"
            )
        return target.power_cut()

    def power_cut_all(self, name: str) -> list[CutReport]:
        """Cut the power of what ``name`` stands for: a server, a node, or every node of a
        cluster at once (a correlated power loss); one report per server."""
        target = self._owned(name, "power-cut")
        service, node = split_node(name)
        if isinstance(target, Cluster):
            return target.power_cut()
        if node is not None:
            return self.cluster(service).power_cut([node])
        return [target.power_cut()]

    def restart(self, name: str) -> StartReport:
        """Bring back a server, a node (waiting until it has joined its cluster again), or a
        whole cluster."""
        target = self._owned(name, "restart")
        service, node = split_node(name)
        if node is not None:
            return self.cluster(service).restart([node])
        return target.restart()

    def status(self, names: Iterable[str] = ()) -> list[Status]:
        """One row per server: a cluster's row per node (a node named: its row)."""
        result = []
        for name in check_services(list(names), nodes=True):
            service, node = split_node(name)
            url = self.settings.external.get(service)
            if url is not None:
                result.append(external.status(service, url, self.settings.connect_timeout_s))
            elif service in CLUSTER_TYPES:
                result.extend(self.cluster(service).status(None if node is None else [node]))
            else:
                result.append(self.service(name).status())
        return result

    def logs(self, name: str, lines: int = 40) -> str:
        target = self._owned(name, "show the logs of")
        service, node = split_node(name)
        if isinstance(target, Cluster) or node is not None:
            return self.cluster(service).logs(None if node is None else [node], lines)
        if not target.log_path.exists():
            raise NotRunningError(
                f"{name} has no log yet ({target.log_path}); run `msglab infra up`"
            )
        return process.log_tail(target.log_path, lines)
