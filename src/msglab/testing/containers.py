"""Container definitions for ``MSGLAB_BACKEND=testcontainers``: the native servers' settings.

Used only where a Docker engine answers. The specs mirror ``compose/stack.yml`` (a test
checks both against the native settings), so fixtures built from them behave like the
native servers: same ports on 127.0.0.1, same durability settings.

Toxiproxy has no spec: the fixtures run the native ``toxiproxy-server`` (a static binary, no
Docker needed) in front of the containers, whose ports are published on 127.0.0.1 exactly where
its proxies' upstreams point (Kafka's ``kafka_proxied`` listener included, in ``more_ports``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from msglab.extras import driver_import
from msglab.settings import Settings


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    port: int
    env: Mapping[str, str] = field(default_factory=dict)
    command: Sequence[str] = ()
    more_ports: Sequence[int] = ()  # also published on 127.0.0.1 at the same number


def specs(settings: Settings) -> dict[str, ContainerSpec]:
    p = settings.ports
    kafka, ctrl, proxied = p["kafka"], p["kafka_controller"], p["kafka_proxied"]
    return {
        "kafka": ContainerSpec(
            "apache/kafka:4.2.2",
            kafka,
            {
                "CLUSTER_ID": "bXNnbGFiLWNvbXBvc2UtMQ",
                "KAFKA_NODE_ID": "1",
                "KAFKA_PROCESS_ROLES": "broker,controller",
                "KAFKA_LISTENERS": f"PLAINTEXT://0.0.0.0:{kafka},CONTROLLER://0.0.0.0:{ctrl},"
                f"PROXIED://0.0.0.0:{proxied}",
                "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{kafka},"
                f"PROXIED://127.0.0.1:{p['kafka_proxy']}",
                "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@localhost:{ctrl}",
                "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
                "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
                    "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT"
                ),
                "KAFKA_NUM_PARTITIONS": "1",
                "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
                "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
                "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
                "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
                "KAFKA_BROKER_SESSION_TIMEOUT_MS": "3000",
                "KAFKA_BROKER_HEARTBEAT_INTERVAL_MS": "1000",
                "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "true",
                "KAFKA_QUOTA_WINDOW_NUM": "2",
                "KAFKA_QUOTA_WINDOW_SIZE_SECONDS": "1",
                "KAFKA_LOG_DIRS": "/var/lib/kafka/data",
            },
            more_ports=[proxied],
        ),
        "rabbitmq": ContainerSpec(
            "rabbitmq:3.10", p["rabbitmq"], {"RABBITMQ_NODE_PORT": str(p["rabbitmq"])}
        ),
        "redis": ContainerSpec(
            "redis:7.0",
            p["redis"],
            command=[
                "redis-server",
                "--port",
                str(p["redis"]),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                settings.redis_appendfsync,
            ],
        ),
        "postgres": ContainerSpec(
            "postgres:15",
            p["postgres"],
            {
                "POSTGRES_USER": "postgres",
                "POSTGRES_PASSWORD": "msglab",
                "POSTGRES_DB": "msglab",
            },
            [
                "postgres",
                "-c",
                f"port={p['postgres']}",
                "-c",
                "wal_level=logical",
                "-c",
                "max_replication_slots=10",
                "-c",
                "max_wal_senders=10",
                "-c",
                "max_connections=200",
                "-c",
                "fsync=on",
            ],
        ),
    }


def build(spec: ContainerSpec) -> Any:
    """A testcontainers ``DockerContainer`` for ``spec`` (not started)."""
    with driver_import("testcontainers", __name__):
        from testcontainers.core.container import DockerContainer

    container = DockerContainer(spec.image)
    for key, value in spec.env.items():
        container = container.with_env(key, value)
    if spec.command:
        container = container.with_command(list(spec.command))
    for port in (spec.port, *spec.more_ports):
        container = container.with_bind_ports(port, ("127.0.0.1", port))
    return container
