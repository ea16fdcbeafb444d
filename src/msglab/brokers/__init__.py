"""Transports, chosen by name. Each module maps msglab's topics and groups onto one broker.

The registry imports a transport's module only when it is asked for, so a user without
``pika`` installed can still use Kafka, and one without any driver the memory and files
transports; asking for a transport whose driver is missing names the extra to install.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from msglab.config import ClientConfig
from msglab.errors import UsageError
from msglab.extras import require
from msglab.ports import Transport

TRANSPORTS: dict[str, str] = {
    "memory": "msglab.brokers.memory:MemoryTransport",
    "kafka": "msglab.brokers.kafka:KafkaTransport",
    "rabbitmq": "msglab.brokers.rabbitmq:RabbitMQTransport",
    "redis-pubsub": "msglab.brokers.redis_pubsub:RedisPubSubTransport",
    "redis-streams": "msglab.brokers.redis_streams:RedisStreamsTransport",
    "files": "msglab.brokers.files:FilesTransport",
}

TRANSACTIONAL: frozenset[str] = frozenset({"kafka"})
"""The transports whose class offers ``ports.TransactionalTransport``: the only ones that take
the ``exactly-once`` profile (the others refuse it when built)."""

SERVICE_OF: dict[str, str | None] = {
    "memory": None,
    "kafka": "kafka",
    "rabbitmq": "rabbitmq",
    "redis-pubsub": "redis",
    "redis-streams": "redis",
    "files": None,
}
"""The ``msglab infra`` service each transport talks to (None: it needs no server)."""

CLUSTER_OF: dict[str, str] = {
    "kafka": "kafka-cluster",
    "rabbitmq": "rabbitmq-cluster",
    "redis-streams": "redis-sentinel",
    "redis-pubsub": "redis-sentinel",
}
"""The replicated cluster each transport runs on with ``--cluster`` (``msglab run``,
``publish``, ``consume``, ``bench``), instead of its single server."""


def service_of(name: str, cluster: bool = False) -> str | None:
    """The ``msglab infra`` service transport ``name`` talks to: its server (None: it needs
    none), or with ``cluster`` its replicated cluster; UsageError naming the transports that
    have one when it has none."""
    if not cluster:
        return SERVICE_OF[name]
    if name not in CLUSTER_OF:
        raise UsageError(
            f"--cluster: {name} has no cluster here; transports with one: {', '.join(CLUSTER_OF)}"
        )
    return CLUSTER_OF[name]


EXTRA_OF: dict[str, str | None] = dict(SERVICE_OF)
"""The pip extra that installs each transport's driver (None: it needs none): each extra is
named after the server its driver talks to."""


def serverless_url(name: str, home: Path) -> str:
    """The URL of a transport that needs no server (SERVICE_OF is None): ``memory://cli``, or
    the files transport's root ``file://<home>/files``."""
    return f"file://{home / 'files'}" if name == "files" else "memory://cli"


def transport_class(name: str) -> type[Transport]:
    """The class of transport ``name``, its module imported now. UsageError lists the valid
    names; MissingExtraError names the extra that installs its driver."""
    if name not in TRANSPORTS:
        raise UsageError(f"unknown transport {name!r}; valid: {', '.join(TRANSPORTS)}")
    extra = EXTRA_OF[name]
    if extra is not None:
        require(extra, what=f"transport {name!r}")
    module, _, attr = TRANSPORTS[name].partition(":")
    cls: type[Transport] = getattr(importlib.import_module(module), attr)
    return cls


def open_transport(name: str, config: ClientConfig) -> Transport:
    """The transport ``name`` configured by ``config``; UsageError lists the valid names."""
    return transport_class(name)(config)  # type: ignore[call-arg]
