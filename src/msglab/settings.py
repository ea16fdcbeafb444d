"""msglab's settings: the only module that reads ``MSGLAB_*`` environment variables.

Every server msglab runs listens on 127.0.0.1 on a port of its own, chosen away from the
standard ports so that a server already on the machine is not disturbed; the nodes of a
cluster listen on the same port numbers, each on its own loopback address (``kafka-cluster``
on 127.0.1.1, 127.0.1.2 ...; ``rabbitmq-cluster`` on 127.0.2.x). Any service can instead be
given by URL (``MSGLAB_<SERVICE>_URL``, ``MSGLAB_KAFKA_CLUSTER_URL``): msglab then uses it,
shows it as external, and refuses to kill or restart it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from msglab.errors import ConfigError, UsageError

SERVICES: tuple[str, ...] = (
    "kafka",
    "kafka2",
    "kafka-cluster",
    "rabbitmq",
    "rabbitmq-cluster",
    "redis",
    "redis-sentinel",
    "postgres",
    "connect",
    "toxiproxy",
)
"""Every server msglab can run, in the order they are started (Kafka's second broker after the
first, whose controller it joins; Kafka Connect after the Kafka and PostgreSQL it needs;
Toxiproxy, which sits in front of the brokers, last)."""

ON_DEMAND: tuple[str, ...] = ("kafka2", "kafka-cluster", "rabbitmq-cluster", "redis-sentinel")
"""Services started only when named: a second Kafka broker would take half of every new
topic's partitions, so it runs only for the scaling probe; a cluster (three JVMs, three Erlang
VMs, or three Redis servers and their Sentinels) is for the replication scenarios that name
it."""

CLUSTER_NODES: Mapping[str, tuple[str, ...]] = {
    "kafka-cluster": ("n1", "n2", "n3"),
    "rabbitmq-cluster": ("n1", "n2", "n3"),
    "redis-sentinel": ("n1", "n2", "n3"),
}
"""The services that are clusters, and their nodes: ``kafka-cluster/n2`` names one node (for
kill, power-cut, restart, logs, status), a bare ``kafka-cluster`` every node at once."""

BACKENDS: tuple[str, ...] = ("native", "compose", "testcontainers")

DEFAULT_PORTS: Mapping[str, int] = {
    "kafka": 29092,
    "kafka_controller": 29093,
    "kafka2": 29096,
    "rabbitmq": 25682,
    "rabbitmq_dist": 25683,
    "rabbitmq_epmd": 24369,
    "redis": 26389,
    "sentinel": 26390,
    "postgres": 25442,
    "toxiproxy": 28474,
    "kafka_proxied": 29094,
    "kafka_proxy": 29095,
    "rabbitmq_proxy": 25692,
    "redis_proxy": 26399,
    "connect": 28083,
}
"""Named ports and their defaults; ``MSGLAB_<NAME>_PORT`` overrides each (for example
``MSGLAB_KAFKA_CONTROLLER_PORT``). ``toxiproxy`` is Toxiproxy's HTTP API; ``<broker>_proxy`` is
where Toxiproxy listens for that broker's clients; ``kafka_proxied`` is the broker's second
listener, the proxy's upstream, which advertises the ``kafka_proxy`` address. ``kafka2`` is the
second Kafka broker's (on demand). ``connect`` is Kafka Connect's REST API (CDC). ``sentinel``
is where each node of ``redis-sentinel`` runs its Redis Sentinel (on the node's own address,
beside its Redis on the ``redis`` port)."""

AppendFsync = Literal["always", "everysec", "no"]


def _port(name: str, raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"MSGLAB_{name.upper()}_PORT={raw!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"MSGLAB_{name.upper()}_PORT={port} is outside 1..65535")
    return port


def check_services(
    names: list[str] | tuple[str, ...], on_demand: bool = False, nodes: bool = False
) -> tuple[str, ...]:
    """Return ``names`` or raise UsageError listing the valid names. When empty: every service,
    without the ON_DEMAND ones unless ``on_demand`` (stopping or showing all includes them).
    ``nodes``: a node of a cluster (``kafka-cluster/n2``) is a valid name too."""
    unknown = [n for n in names if split_node(n)[0] not in SERVICES]
    if unknown:
        raise UsageError(
            f"unknown service {', '.join(map(repr, unknown))}; valid: {', '.join(SERVICES)}"
        )
    for name in names:
        service, node = split_node(name)
        if node is None:
            continue
        valid = CLUSTER_NODES.get(service)
        if valid is None:
            raise UsageError(f"{service} is not a cluster: {name!r} names no server")
        if not nodes:
            raise UsageError(f"{name!r}: name the service ({service}), not one of its nodes")
        if node not in valid:
            raise UsageError(
                f"unknown node {node!r} of {service}; valid: "
                + ", ".join(f"{service}/{n}" for n in valid)
            )
    if names:
        return tuple(names)
    return SERVICES if on_demand else tuple(s for s in SERVICES if s not in ON_DEMAND)


def split_node(name: str) -> tuple[str, str | None]:
    """``kafka-cluster/n2`` -> (``kafka-cluster``, ``n2``); a service's name -> (name, None)."""
    service, slash, node = name.partition("/")
    return service, (node if slash else None)


def env_name(service: str) -> str:
    """The middle of a service's ``MSGLAB_<NAME>_URL`` variable: ``kafka-cluster`` ->
    ``KAFKA_CLUSTER``."""
    return service.upper().replace("-", "_")


@dataclass(frozen=True)
class Settings:
    """Where msglab keeps its state and how it reaches each server.

    home: every server's data, logs and config (``MSGLAB_HOME``, default ``./.msglab``).
    cache: software msglab installed (Kafka jars), shared by every home
        (``MSGLAB_CACHE``, default ``~/.cache/msglab``).
    backend: ``native`` (processes msglab owns), ``compose`` (docker compose) or
        ``testcontainers`` (test fixtures only).
    ports: every named port (see DEFAULT_PORTS).
    external: service name -> URL of a server msglab does not own.
    connect_timeout_s: how long a readiness probe or client waits for a connection.
    start_timeout_s: how long ``up`` waits for a server to become ready.
    redis_appendfsync: Redis AOF policy; ``always`` keeps every confirmed write even
        across a power cut, ``everysec`` only across a process kill.
    """

    home: Path = field(default_factory=lambda: Path(".msglab").resolve())
    cache: Path = field(default_factory=lambda: Path.home() / ".cache" / "msglab")
    backend: str = "native"
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    external: Mapping[str, str] = field(default_factory=dict)
    connect_timeout_s: float = 5.0
    start_timeout_s: float = 90.0
    redis_appendfsync: AppendFsync = "always"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        missing = set(DEFAULT_PORTS) - set(self.ports)
        if missing:
            raise ConfigError(f"ports missing for {', '.join(sorted(missing))}")
        check_services(list(self.external))
        if self.redis_appendfsync not in ("always", "everysec", "no"):
            raise ConfigError(
                f"redis appendfsync {self.redis_appendfsync!r}; valid: always, everysec, no"
            )
        if self.connect_timeout_s <= 0 or self.start_timeout_s <= 0:
            raise ConfigError("timeouts must be positive")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``MSGLAB_*`` variables (``os.environ`` when ``env`` is None)."""
        env = os.environ if env is None else env
        ports = {
            name: _port(name, env.get(f"MSGLAB_{name.upper()}_PORT", str(default)))
            for name, default in DEFAULT_PORTS.items()
        }
        external = {
            s: env[f"MSGLAB_{env_name(s)}_URL"]
            for s in SERVICES
            if env.get(f"MSGLAB_{env_name(s)}_URL")
        }
        base = cls()
        fsync = env.get("MSGLAB_REDIS_APPENDFSYNC", base.redis_appendfsync)
        return cls(
            home=Path(env.get("MSGLAB_HOME", ".msglab")).resolve(),
            cache=Path(env["MSGLAB_CACHE"]).resolve() if env.get("MSGLAB_CACHE") else base.cache,
            backend=env.get("MSGLAB_BACKEND", "native"),
            ports=ports,
            external=external,
            connect_timeout_s=float(env.get("MSGLAB_CONNECT_TIMEOUT", "5")),
            start_timeout_s=float(env.get("MSGLAB_START_TIMEOUT", "90")),
            redis_appendfsync=fsync,  # type: ignore[arg-type]  # validated in __post_init__
        )

    def with_backend(self, backend: str) -> Settings:
        return replace(self, backend=backend)


def in_ci(env: Mapping[str, str] | None = None) -> bool:
    """True under CI (``CI=true``): a server that cannot start must fail the run, not skip."""
    env = os.environ if env is None else env
    return env.get("CI", "").lower() in ("1", "true", "yes")
