"""The compose backend: the same servers from official images, driven by ``docker compose``.

For users with a Docker engine. ``compose/stack.yml`` publishes the native backend's ports on
127.0.0.1 with the same server settings, so a test or a lab run cannot tell the two apart.
Toxiproxy's container starts with ``compose/toxiproxy.json`` (the proxies at the default
ports); after ``up`` and ``restart`` this backend populates them for the configured ports.

The replicated clusters (``kafka-cluster``, ``rabbitmq-cluster``, ``redis-sentinel``) are one
compose service per server of a node, named after the native server (``kafka-cluster/n2``:
service ``kafka-cluster-n2``; a Redis node's Sentinel: ``redis-sentinel-n2-sentinel``), under a
profile named after the cluster, on the host's network at the native node's address and ports,
so that a cluster's URL is the same under both backends. ``up``, ``down`` and ``install`` take a
cluster (every node); ``status``, ``logs``, ``restart``, ``kill`` also a node
(``kafka-cluster/n2``: its services). What the lab does to a cluster (``cluster``: a run's
kills, restarts, pauses, partitions and power cuts of nodes) needs the native backend.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msglab.errors import InfraError, NotRunningError, ServerStartError, UsageError
from msglab.infra import external
from msglab.infra.lazyfs import CutReport
from msglab.infra.native import CLUSTER_TYPES
from msglab.infra.rabbitmq_cluster import RabbitMQCluster
from msglab.infra.redis_sentinel import RedisNode
from msglab.infra.service import HOST, NativeService, StartReport, Status
from msglab.infra.toxics import ToxiproxyClient
from msglab.infra.toxiproxy import PROXIED, proxy_specs
from msglab.settings import CLUSTER_NODES, Settings, check_services, split_node

if TYPE_CHECKING:
    from msglab.infra.cluster import Cluster

PROJECT = "msglab"

URLS = {
    "kafka": "{host}:{port}",
    "kafka2": "{host}:{port}",
    "rabbitmq": "amqp://guest:guest@{host}:{port}/%2F",
    "redis": "redis://{host}:{port}/0",
    "postgres": "postgresql://postgres:msglab@{host}:{port}/msglab",
    "connect": "http://{host}:{port}",
    "toxiproxy": "http://{host}:{port}",
}

STATELESS = ("toxiproxy", "connect")
"""Services without a volume (Connect keeps its state in Kafka topics)."""

COOKIE_VARIABLE = "MSGLAB_RABBITMQ_CLUSTER_COOKIE"
"""How ``compose/stack.yml`` gets rabbitmq-cluster's Erlang cookie: the native cluster's own
(``<home>/rabbitmq-cluster/.erlang.cookie``), in the environment of ``docker compose`` only."""

PID_FORMAT = '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Pid}}'

NATIVE_FAULTS = (
    "{name}: cluster faults and --cluster need the native backend (MSGLAB_BACKEND=native): "
    "partitions are nftables rules on the nodes' process groups, power cuts need msglab's "
    "FUSE mounts"
)


def stack_file() -> Path:
    """``MSGLAB_COMPOSE_FILE``, else ``compose/stack.yml`` of the checkout msglab runs from."""
    env = os.environ.get("MSGLAB_COMPOSE_FILE")
    if env:
        return Path(env)
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        candidate = base / "compose" / "stack.yml"
        if candidate.exists():
            return candidate
    raise InfraError("compose/stack.yml not found; set MSGLAB_COMPOSE_FILE")


def service_name(server: NativeService) -> str:
    """The compose service of a native server: ``kafka-cluster/n2`` -> ``kafka-cluster-n2``,
    ``redis-sentinel/n2/sentinel`` -> ``redis-sentinel-n2-sentinel``."""
    return server.name.replace("/", "-")


def node_servers(node: NativeService) -> list[NativeService]:
    """The servers of a cluster's node, one compose service each: the node's own, then a Redis
    node's Sentinel."""
    return [node, node.sentinel] if isinstance(node, RedisNode) else [node]


def _profiles(names: Iterable[str]) -> list[str]:
    """The profiles of the clusters that ``names`` (services, clusters, nodes) touch."""
    touched = {split_node(name)[0] for name in names}
    return [cluster for cluster in CLUSTER_NODES if cluster in touched]


def _pid_of(pid: int | None) -> int | None:
    """A server's ``pid()`` when its PID is its container's (see ``ComposeBackend._roles``)."""
    return pid


class ComposeBackend:
    """``docker compose -f compose/stack.yml -p msglab``; names as the native backend takes
    them (see the module). A server's PID is its container's main process."""

    name = "compose"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def cluster(self, name: str) -> Cluster[Any]:
        """Refused: a run's faults on a cluster's nodes need the native backend."""
        (valid,) = check_services([name])
        if valid not in CLUSTER_NODES:
            raise UsageError(f"{valid} is not a cluster; clusters: {', '.join(CLUSTER_NODES)}")
        raise UsageError(NATIVE_FAULTS.format(name=valid))

    def _cluster(self, name: str) -> Cluster[Any]:
        """The native cluster ``name``: its nodes' names, addresses, URL and probes."""
        return CLUSTER_TYPES[name](self.settings)

    def _servers(self, name: str) -> dict[str, str]:
        """What ``name`` (a service, a cluster or one node) stands for: each server's name, as
        the native backend names it, and its compose service."""
        cluster, node = split_node(name)
        if cluster not in CLUSTER_NODES:
            return {name: name}
        nodes = self._cluster(cluster).nodes
        picked = nodes.values() if node is None else [nodes[node]]
        return {s.name: service_name(s) for svc in picked for s in node_servers(svc)}

    def _services(self, names: Iterable[str]) -> list[str]:
        """The compose services of ``names`` (services, clusters, nodes), in order."""
        return [service for name in names for service in self._servers(name).values()]

    @functools.cached_property
    def _docker(self) -> str:
        """The docker client, once an engine answers it (else InfraError, saying which)."""
        docker = shutil.which("docker")
        if docker is None:
            raise InfraError("the compose backend needs the docker client; it is not installed")
        engine = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if engine.returncode != 0:
            why = (engine.stderr.strip().splitlines() or ["no reply"])[-1]
            raise InfraError(
                f"the compose backend needs a Docker engine and none answers ({why}); "
                "use --backend native"
            )
        return docker

    def _env(self, profiles: Sequence[str]) -> dict[str, str]:
        """The environment of ``docker compose``: the configured ports and, for
        rabbitmq-cluster, its Erlang cookie."""
        env = {
            **os.environ,
            **{f"MSGLAB_{k.upper()}_PORT": str(v) for k, v in self.settings.ports.items()},
        }
        if RabbitMQCluster.name in profiles:
            env[COOKIE_VARIABLE] = RabbitMQCluster(self.settings).cookie()
        return env

    def _compose(self, *args: str, profiles: Sequence[str] = (), check: bool = True) -> str:
        """``docker compose -f <stack> -p msglab [--profile <cluster>]... <args>``; its output."""
        options = [arg for profile in profiles for arg in ("--profile", profile)]
        argv = [self._docker, "compose", "-f", str(stack_file()), "-p", PROJECT, *options, *args]
        result = subprocess.run(
            argv, capture_output=True, text=True, env=self._env(profiles), check=False
        )
        if check and result.returncode != 0:
            raise InfraError(f"`{' '.join(argv[1:])}` failed: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def install(self, names: list[str]) -> list[str]:
        named = check_services(names)
        self._compose("pull", *self._services(named), profiles=_profiles(named))
        return list(named)

    def up(self, names: list[str], lazyfs: bool = False) -> list[StartReport]:
        """Start services and whole clusters (all services but the on-demand ones when none
        is named) and wait until every container is healthy."""
        if lazyfs:
            raise UsageError("--lazyfs needs the native backend (msglab's own processes)")
        began = time.monotonic()
        named = check_services(names)
        self._compose("up", "-d", "--wait", *self._services(named), profiles=_profiles(named))
        if "toxiproxy" in named:
            self._populate_proxies()
        seconds = time.monotonic() - began
        return [StartReport(s, started=True, cold=False, seconds=seconds) for s in named]

    def down(self, names: list[str]) -> list[str]:
        named = check_services(names, on_demand=True)
        self._compose("stop", *self._services(named), profiles=_profiles(named))
        return list(named)

    def kill(self, name: str) -> int:
        """SIGKILL one server's containers (a service, or a node: a Redis node's Sentinel
        too); the first PID killed. A whole cluster: ``kill_all``."""
        cluster, node = split_node(name)
        if cluster in CLUSTER_NODES and node is None:
            raise UsageError(
                f"{name} is a cluster: kill one node ({name}/n1 ...) or every node (kill_all)"
            )
        return self.kill_all(name)[0][1]

    def kill_all(self, name: str) -> list[tuple[str, int]]:
        """SIGKILL, in one ``docker compose kill``, every running container of a service, a
        node or a whole cluster; each server killed (its native name) with its PID.
        NotRunningError when none runs."""
        (valid,) = check_services([name], nodes=True)
        servers = self._servers(valid)
        profiles = _profiles([valid])
        pids = self._pids(list(servers.values()), profiles)
        victims = [(label, pids[service]) for label, service in servers.items() if pids[service]]
        if not victims:
            raise NotRunningError(f"{valid} is not running; nothing to kill")
        running = [servers[label] for label, _ in victims]
        self._compose("kill", "-s", "SIGKILL", *running, profiles=profiles)
        return victims

    def power_cut(self, name: str) -> CutReport:
        raise UsageError("power cuts need the native backend: `msglab infra up --lazyfs`")

    def power_cut_all(self, name: str) -> list[CutReport]:
        return [self.power_cut(name)]

    def restart(self, name: str) -> StartReport:
        """Start a service's, a node's or a cluster's containers again (``up --wait``: one
        that runs is left as it is) and wait until they are healthy."""
        (valid,) = check_services([name], nodes=True)
        began = time.monotonic()
        self._compose("up", "-d", "--wait", *self._services([valid]), profiles=_profiles([valid]))
        if valid == "toxiproxy":
            self._populate_proxies()
        return StartReport(valid, started=True, cold=False, seconds=time.monotonic() - began)

    def _populate_proxies(self) -> None:
        """Create the proxies for the configured ports (inside the container, on the network
        compose made, each broker is reached by its service name)."""
        url = URLS["toxiproxy"].format(host=HOST, port=self.settings.ports["toxiproxy"])
        specs = proxy_specs(self.settings, "0.0.0.0", {name: name for name in PROXIED})
        ToxiproxyClient(url, self.settings.connect_timeout_s).populate(specs)

    def _pids(self, services: Sequence[str], profiles: Sequence[str] = ()) -> dict[str, int]:
        """Each service's container's PID, 0 when none runs: one ``ps``, one ``inspect``."""
        ids = self._compose("ps", "-q", *services, profiles=profiles).split()
        found: dict[str, int] = {}
        if ids:
            out = subprocess.run(
                [self._docker, "inspect", "-f", PID_FORMAT, *ids],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            for line in out.splitlines():
                service, _, pid = line.strip().rpartition(" ")
                found[service] = int(pid) if pid.isdigit() else 0
        return {service: found.get(service, 0) for service in services}

    def status(self, names: list[str]) -> list[Status]:
        """One row per server, a cluster's per node (a node named: its row), as the native
        backend shows them; see ``_cluster_status`` for a node's."""
        rows = []
        for name in check_services(names, nodes=True):
            cluster, node = split_node(name)
            if cluster in CLUSTER_NODES:
                rows.extend(self._cluster_status(cluster, node))
            else:
                rows.append(self._service_status(name))
        return rows

    def _service_status(self, service: str) -> Status:
        port = self.settings.ports[service]
        probe = external.PROBES[service]
        pid = self._pids([service])[service]
        return Status(
            service=service,
            owner="compose",
            pid=pid or None,
            address=f"{HOST}:{port}",
            url=URLS[service].format(host=HOST, port=port),
            healthy=bool(pid) and probe(HOST, port, self.settings.connect_timeout_s),
            data_dir=None if service in STATELESS else f"volume {PROJECT}_{service}",
            version=None,
        )

    def _cluster_status(self, name: str, node: str | None) -> list[Status]:
        """A row per node (``node``'s only when given): the native node's address, the
        cluster's URL, its container's PID, healthy when each of its servers' containers runs
        and answers the native node's probe (a Redis node's Sentinel too), its role."""
        cluster = self._cluster(name)
        servers = self._servers(name)
        pids = self._pids(list(servers.values()), [name])
        by_server = {label: pids[service] for label, service in servers.items()}
        roles = self._roles(cluster, by_server)
        timeout_s = min(self.settings.connect_timeout_s, 2.0)
        return [
            Status(
                service=name,
                owner="compose",
                pid=by_server[svc.name] or None,
                address=svc.address,
                url=cluster.url,
                healthy=all(
                    bool(by_server[s.name]) and s.ping(timeout_s) for s in node_servers(svc)
                ),
                data_dir=f"volume {PROJECT}_{service_name(svc)}",
                version=None,
                node=n,
                role=roles.get(n),
            )
            for n, svc in cluster.nodes.items()
            if node in (None, n)
        ]

    def _roles(self, cluster: Cluster[Any], pids: Mapping[str, int]) -> dict[str, str | None]:
        """Each node's role as the native cluster reads it over its servers' own protocols
        (Kafka: DescribeQuorum; Redis: ROLE and SENTINEL MASTER), its servers' PIDs being their
        containers' (``pids``, by native name). rabbitmq-cluster: no role ({}): RabbitMQ tells
        which nodes run only through its CLI tools, which run on the host (native only)."""
        if isinstance(cluster, RabbitMQCluster):
            return {}
        for svc in cluster.nodes.values():
            for server in node_servers(svc):
                pid = pids[server.name] or None
                server.pid = functools.partial(_pid_of, pid)  # type: ignore[method-assign]
        return cluster.roles()

    def logs(self, name: str, lines: int) -> str:
        """The last ``lines`` of each container of a service, a node or a cluster."""
        (valid,) = check_services([name], nodes=True)
        services = self._services([valid])
        out = self._compose(
            "logs", "--no-color", "--tail", str(lines), *services, profiles=_profiles([valid])
        )
        if not out:
            raise ServerStartError(f"{valid} has no logs in compose project {PROJECT}")
        return out
