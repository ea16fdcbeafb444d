"""Servers msglab does not own, given by URL (``MSGLAB_<SERVICE>_URL``): probed, never killed."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from msglab.errors import ConfigError
from msglab.infra import probes
from msglab.infra.service import Status

DEFAULT_PORTS = {
    "kafka": 9092,
    "kafka2": 9092,
    "kafka-cluster": 9092,
    "rabbitmq": 5672,
    "rabbitmq-cluster": 5672,
    "redis": 6379,
    "redis-sentinel": 26379,  # a Sentinel's
    "postgres": 5432,
    "connect": 8083,
    "toxiproxy": 8474,
}

Probe = Callable[[str, int, float], bool]

PROBES: dict[str, Probe] = {
    "kafka": probes.kafka_api_versions,
    "kafka2": probes.kafka_api_versions,
    "kafka-cluster": probes.kafka_api_versions,  # its first bootstrap address
    "rabbitmq": lambda h, p, t: probes.amqp_handshake(h, p, t) is not None,
    "rabbitmq-cluster": lambda h, p, t: probes.amqp_handshake(h, p, t) is not None,  # its first
    "redis": probes.redis_ping,
    "redis-sentinel": probes.redis_ping,  # its first Sentinel (redis+sentinel://h:p,.../name)
    "postgres": probes.postgres_ready,
    "connect": probes.connect_rest,
    "toxiproxy": lambda h, p, t: probes.toxiproxy_version(h, p, t) is not None,
}


def host_port(service: str, url: str) -> tuple[str, int]:
    """The first host:port of ``url`` (Kafka: a bootstrap list ``h1:p1,h2:p2`` or ``kafka://``)."""
    text = url if "://" in url else f"{service}://{url}"
    first = urlsplit(text)
    netloc = first.netloc.rsplit("@", 1)[-1].split(",")[0]
    parsed = urlsplit(f"//{netloc}")
    try:
        port = parsed.port or DEFAULT_PORTS[service]
    except ValueError:
        raise ConfigError(f"{service}: the URL {url!r} has an invalid port") from None
    if not parsed.hostname:
        raise ConfigError(f"{service}: the URL {url!r} names no host")
    return parsed.hostname, port


def status(service: str, url: str, timeout_s: float) -> Status:
    host, port = host_port(service, url)
    return Status(
        service=service,
        owner="external",
        pid=None,
        address=f"{host}:{port}",
        url=url,
        healthy=PROBES[service](host, port, timeout_s),
        data_dir=None,
        version=None,
    )
