"""The compose backend: the same servers from official images, driven by ``docker compose``.

For users with a Docker engine. ``compose/stack.yml`` publishes the native backend's ports on
127.0.0.1 with the same server settings, so a test or a lab run cannot tell the two apart.
Toxiproxy's container starts with ``compose/toxiproxy.json`` (the proxies at the default
ports); after ``up`` and ``restart`` this backend populates them for the configured ports.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msglab.errors import InfraError, NotRunningError, ServerStartError, UsageError
from msglab.infra import external
from msglab.infra.lazyfs import CutReport
from msglab.infra.redis_sentinel import RedisNode
from msglab.infra.service import HOST, NativeService, StartReport, Status
from msglab.infra.toxics import ToxiproxyClient
from msglab.infra.toxiproxy import PROXIED, proxy_specs
from msglab.settings import Settings, check_services

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

NATIVE_ONLY = ("kafka-cluster", "rabbitmq-cluster", "redis-sentinel")
"""Services this backend does not drive yet: the native backend runs them."""

COOKIE_VARIABLE = "MSGLAB_RABBITMQ_CLUSTER_COOKIE"
"""How ``compose/stack.yml`` gets rabbitmq-cluster's Erlang cookie: the native cluster's own
(``<home>/rabbitmq-cluster/.erlang.cookie``), in the environment of ``docker compose`` only."""


def service_name(server: NativeService) -> str:
    """The compose service of a native server: ``kafka-cluster/n2`` -> ``kafka-cluster-n2``,
    ``redis-sentinel/n2/sentinel`` -> ``redis-sentinel-n2-sentinel``."""
    return server.name.replace("/", "-")


def node_servers(node: NativeService) -> list[NativeService]:
    """The servers of a cluster's node, one compose service each: the node's own, then a Redis
    node's Sentinel."""
    return [node, node.sentinel] if isinstance(node, RedisNode) else [node]


def _services(names: list[str], on_demand: bool = False) -> tuple[str, ...]:
    """The services named (all when none), refusing a native-only one named; when all, those
    the stack has."""
    services = check_services(names, on_demand=on_demand)
    refused = [s for s in names if s in NATIVE_ONLY]
    if refused:
        raise UsageError(
            f"{', '.join(refused)}: not in compose/stack.yml; use the native backend "
            "(--backend native)"
        )
    return tuple(s for s in services if s not in NATIVE_ONLY)


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


class ComposeBackend:
    name = "compose"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def cluster(self, name: str) -> Cluster[Any]:
        _services([name])  # a cluster is native only: refused, naming the native backend
        raise UsageError(f"{name} is not a cluster")

    def _compose(self, *args: str, check: bool = True) -> str:
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
        env = {
            **os.environ,
            **{f"MSGLAB_{k.upper()}_PORT": str(v) for k, v in self.settings.ports.items()},
        }
        argv = [docker, "compose", "-f", str(stack_file()), "-p", PROJECT, *args]
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if check and result.returncode != 0:
            raise InfraError(f"`{' '.join(argv[1:])}` failed: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def install(self, names: list[str]) -> list[str]:
        self._compose("pull", *_services(names))
        return list(_services(names))

    def up(self, names: list[str], lazyfs: bool = False) -> list[StartReport]:
        if lazyfs:
            raise UsageError("--lazyfs needs the native backend (msglab's own processes)")
        began = time.monotonic()
        services = _services(names)
        self._compose("up", "-d", "--wait", *services)
        if "toxiproxy" in services:
            self._populate_proxies()
        seconds = time.monotonic() - began
        return [StartReport(s, started=True, cold=False, seconds=seconds) for s in services]

    def down(self, names: list[str]) -> list[str]:
        services = _services(names, on_demand=True)
        self._compose("stop", *services)
        return list(services)

    def kill(self, name: str) -> int:
        (service,) = _services([name])
        if not self._container_pid(service):
            raise NotRunningError(f"{service} is not running; nothing to kill")
        pid = self._container_pid(service)
        self._compose("kill", "-s", "SIGKILL", service)
        return pid

    def kill_all(self, name: str) -> list[tuple[str, int]]:
        return [(name, self.kill(name))]

    def power_cut(self, name: str) -> CutReport:
        raise UsageError("power cuts need the native backend: `msglab infra up --lazyfs`")

    def power_cut_all(self, name: str) -> list[CutReport]:
        return [self.power_cut(name)]

    def restart(self, name: str) -> StartReport:
        (service,) = _services([name])
        began = time.monotonic()
        self._compose("up", "-d", "--wait", service)
        if service == "toxiproxy":
            self._populate_proxies()
        return StartReport(service, started=True, cold=False, seconds=time.monotonic() - began)

    def _populate_proxies(self) -> None:
        """Create the proxies for the configured ports (inside the container, on the network
        compose made, each broker is reached by its service name)."""
        url = URLS["toxiproxy"].format(host=HOST, port=self.settings.ports["toxiproxy"])
        specs = proxy_specs(self.settings, "0.0.0.0", {name: name for name in PROXIED})
        ToxiproxyClient(url, self.settings.connect_timeout_s).populate(specs)

    def _container_pid(self, service: str) -> int:
        cid = self._compose("ps", "-q", service).strip()
        if not cid:
            return 0
        out = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Pid}}", cid],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        return int(out or 0)

    def status(self, names: list[str]) -> list[Status]:
        rows = []
        for service in _services(names):
            port = self.settings.ports[service]
            probe = external.PROBES[service]
            pid = self._container_pid(service)
            rows.append(
                Status(
                    service=service,
                    owner="compose",
                    pid=pid or None,
                    address=f"{HOST}:{port}",
                    url=URLS[service].format(host=HOST, port=port),
                    healthy=bool(pid) and probe(HOST, port, self.settings.connect_timeout_s),
                    data_dir=None if service in STATELESS else f"volume {PROJECT}_{service}",
                    version=None,
                )
            )
        return rows

    def logs(self, name: str, lines: int) -> str:
        (service,) = _services([name])
        out = self._compose("logs", "--no-color", "--tail", str(lines), service)
        if not out:
            raise ServerStartError(f"{service} has no logs in compose project {PROJECT}")
        return out
