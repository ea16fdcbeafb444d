"""Toxiproxy in front of the real brokers: the proxies exist after every start, faults bite.

Redis is spoken to with raw sockets (one PING, one answer) so that a test measures the proxy,
not a client library's retries; Kafka with confluent_kafka, to see which address the broker
advertises to a client that bootstrapped through the proxy.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from msglab.errors import InfraError, UsageError
from msglab.infra import Backend, Status
from msglab.infra.external import host_port
from msglab.infra.toxics import ToxiproxyClient
from msglab.infra.toxiproxy import PROXIED, proxied_url
from msglab.settings import Settings

pytestmark = pytest.mark.toxiproxy


def expected_proxies(settings: Settings) -> dict[str, tuple[str, str]]:
    p = settings.ports
    return {
        "kafka": (f"127.0.0.1:{p['kafka_proxy']}", f"127.0.0.1:{p['kafka_proxied']}"),
        "rabbitmq": (f"127.0.0.1:{p['rabbitmq_proxy']}", f"127.0.0.1:{p['rabbitmq']}"),
        "redis": (f"127.0.0.1:{p['redis_proxy']}", f"127.0.0.1:{p['redis']}"),
    }


def assert_proxies(client: ToxiproxyClient, settings: Settings) -> None:
    proxies = client.proxies()
    found = {name: (p.listen, p.upstream) for name, p in proxies.items()}
    assert found == expected_proxies(settings)
    assert all(p.enabled and not p.toxics for p in proxies.values())


def redis_proxy(settings: Settings) -> socket.socket:
    host, port = host_port("redis", proxied_url(settings, "redis"))
    sock = socket.create_connection((host, port), timeout=5)
    sock.settimeout(5)
    return sock


def ping(sock: socket.socket) -> bytes:
    sock.sendall(b"PING\r\n")
    return sock.recv(64)


def test_proxies_exist_after_up_and_after_kill_and_restart(
    toxiproxy_server: Status,
    toxiproxy: ToxiproxyClient,
    msglab_settings: Settings,
    msglab_infra: Backend,
) -> None:
    assert toxiproxy_server.healthy
    assert_proxies(toxiproxy, msglab_settings)
    toxiproxy.add_toxic("redis", "slow", "latency", {"latency": 50})

    msglab_infra.kill("toxiproxy")
    (down,) = msglab_infra.status(["toxiproxy"])
    assert down.pid is None and not down.healthy
    msglab_infra.restart("toxiproxy")
    (back,) = msglab_infra.status(["toxiproxy"])
    assert back.healthy and back.pid not in (None, toxiproxy_server.pid)
    assert_proxies(toxiproxy, msglab_settings)  # the toxic is gone with the process


@pytest.mark.redis
def test_redis_answers_through_the_proxy(
    redis_server: Status, toxiproxy: ToxiproxyClient, msglab_settings: Settings
) -> None:
    with redis_proxy(msglab_settings) as sock:
        assert ping(sock) == b"+PONG\r\n"


@pytest.mark.redis
def test_blackhole_swallows_answers_until_removed_or_reset(
    redis_server: Status, toxiproxy: ToxiproxyClient, msglab_settings: Settings
) -> None:
    for heal in ("remove", "reset"):
        toxiproxy.add_toxic("redis", "blackhole", "timeout", {"timeout": 0})
        assert [t.type for t in toxiproxy.proxy("redis").toxics] == ["timeout"]
        with redis_proxy(msglab_settings) as sock:
            sock.settimeout(1.0)
            with pytest.raises(TimeoutError):
                ping(sock)
        if heal == "remove":
            toxiproxy.remove_toxic("redis", "blackhole")
        else:
            toxiproxy.reset()
        with redis_proxy(msglab_settings) as sock:
            assert ping(sock) == b"+PONG\r\n"


@pytest.mark.redis
def test_latency_toxic_delays_each_round_trip(
    redis_server: Status, toxiproxy: ToxiproxyClient, msglab_settings: Settings
) -> None:
    with redis_proxy(msglab_settings) as sock:
        began = time.monotonic()
        assert ping(sock) == b"+PONG\r\n"
        plain = time.monotonic() - began
    toxiproxy.add_toxic("redis", "slow", "latency", {"latency": 300, "jitter": 0})
    with redis_proxy(msglab_settings) as sock:
        began = time.monotonic()
        assert ping(sock) == b"+PONG\r\n"
        slowed = time.monotonic() - began
    assert plain < 0.3 <= slowed, (plain, slowed)


@pytest.mark.redis
def test_disabled_proxy_refuses_connections(
    redis_server: Status, toxiproxy: ToxiproxyClient, msglab_settings: Settings
) -> None:
    assert not toxiproxy.set_enabled("redis", False).enabled
    with pytest.raises(ConnectionRefusedError):
        redis_proxy(msglab_settings)
    assert toxiproxy.set_enabled("redis", True).enabled
    with redis_proxy(msglab_settings) as sock:
        assert ping(sock) == b"+PONG\r\n"


@pytest.mark.kafka
def test_kafka_client_bootstrapped_through_the_proxy_stays_behind_it(
    kafka_server: Status,
    toxiproxy: ToxiproxyClient,
    msglab_settings: Settings,
    unique_name: str,
) -> None:
    from confluent_kafka import Consumer, KafkaError, Producer
    from confluent_kafka.admin import AdminClient

    bootstrap = proxied_url(msglab_settings, "kafka")
    ports = msglab_settings.ports
    brokers = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=20).brokers
    assert [(b.host, b.port) for b in brokers.values()] == [("127.0.0.1", ports["kafka_proxy"])]
    direct = AdminClient({"bootstrap.servers": kafka_server.url}).list_topics(timeout=20).brokers
    assert [(b.host, b.port) for b in direct.values()] == [("127.0.0.1", ports["kafka"])]

    delivered: list[Any] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        delivered.append(err)

    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 3000})
    producer.produce(unique_name, b"through the proxy", on_delivery=on_delivery)
    assert producer.flush(20) == 0 and delivered == [None]

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([unique_name])
    got = None
    deadline = time.monotonic() + 30
    while got is None and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            got = msg.value()
    consumer.close()
    assert got == b"through the proxy"

    # The producer's connections all go through the proxy: cutting it cuts the producer.
    toxiproxy.set_enabled("kafka", False)
    delivered.clear()
    producer.produce(unique_name, b"cut off", on_delivery=on_delivery)
    producer.flush(10)
    assert len(delivered) == 1 and delivered[0] is not None, delivered
    assert delivered[0].code() == KafkaError._MSG_TIMED_OUT


def test_unknown_proxy_is_a_usage_error_listing_the_proxies(toxiproxy: ToxiproxyClient) -> None:
    with pytest.raises(UsageError) as caught:
        toxiproxy.add_toxic("postgres", "slow", "latency", {"latency": 10})
    assert "'postgres'" in str(caught.value)
    assert all(name in str(caught.value) for name in PROXIED)
    with pytest.raises(UsageError, match="toxic not found"):
        toxiproxy.remove_toxic("redis", "never-added")
    with pytest.raises(UsageError, match="invalid toxic type"):
        toxiproxy.add_toxic("redis", "odd", "no-such-toxic", {})


def test_unreachable_toxiproxy_is_an_infra_error_naming_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = ToxiproxyClient(f"http://127.0.0.1:{port}", timeout_s=1)
    with pytest.raises(InfraError, match=f"127.0.0.1:{port}/proxies"):
        client.proxies()
