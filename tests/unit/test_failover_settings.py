"""What each transport's clients do when a node goes away is part of each profile: ``msglab
profiles`` shows the settings the clients are built with (read from the same functions), and
the drivers accept them. No server needed."""

from __future__ import annotations

import pytest

from msglab.brokers import _redis_common as redis_common
from msglab.brokers import kafka, rabbitmq
from msglab.brokers.redis_pubsub import RedisPubSubTransport
from msglab.brokers.redis_streams import RedisStreamsTransport
from msglab.config import ClientConfig
from msglab.profiles import DeliveryProfile

PROFILES = (DeliveryProfile.AT_LEAST_ONCE, DeliveryProfile.AT_MOST_ONCE)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.value)
def test_kafka_shows_the_failover_settings_every_client_is_built_with(
    profile: DeliveryProfile,
) -> None:
    config = ClientConfig(url="127.0.0.1:1", profile=profile)
    failover = kafka.failover_settings(config)
    shown = kafka.KafkaTransport.profile_settings()[profile.value]
    for built in (
        kafka.producer_settings(config),
        kafka.consumer_settings(config, "G"),
        kafka._common(config),  # the admin client's
    ):
        assert failover.items() <= built.items()
    assert {k: v for k, v in shown.items() if k.startswith("failover ")} == {
        f"failover {k}": str(v) for k, v in failover.items()
    }
    # a request unanswered within the request timeout drops the connection (librdkafka: 60 s)
    assert failover["socket.timeout.ms"] == kafka.producer_settings(config)["message.timeout.ms"]
    assert failover["socket.timeout.ms"] == 10_000
    assert failover["topic.metadata.refresh.fast.interval.ms"] == 100


def test_librdkafka_takes_every_setting() -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

    config = ClientConfig(url="127.0.0.1:1")
    Producer(kafka.producer_settings(config)).flush(0)
    Consumer(kafka.consumer_settings(config, "G")).close()
    AdminClient(kafka._common(config))


def test_rabbitmq_gives_every_node_the_settings_it_shows() -> None:
    config = ClientConfig(url="amqp://a:5672/%2F,amqp://b:5672/%2F,amqp://c:5672/%2F")
    wanted = rabbitmq.connection_settings(config)
    params = rabbitmq._params(config)
    assert [p.host for p in params] == ["a", "b", "c"]
    for p in params:
        assert {k: getattr(p, k) for k in wanted} == wanted
    assert wanted["heartbeat"] == rabbitmq.HEARTBEAT_S and wanted["connection_attempts"] == 1
    shown = rabbitmq.RabbitMQTransport.profile_settings()
    for profile in shown.values():
        assert profile["connection"] == ", ".join(f"{k}={v:g}" for k, v in wanted.items())
        assert "after 0, 0.2, 0.4 s" in profile["failover publish"]
        assert f"up to {config.reconnect.attempts} reconnects" in profile["failover consume"]


@pytest.mark.parametrize(("nodes", "tries"), [(1, 3), (3, 3), (5, 5), (12, 12)])
def test_a_rabbitmq_publisher_tries_every_node_before_it_gives_up(nodes: int, tries: int) -> None:
    config = ClientConfig(url="amqp://")
    delays = rabbitmq.publish_connect_delays(config, nodes)
    assert len(delays) == tries and delays[0] == 0
    assert delays[1:] == sorted(delays[1:]) and max(delays) <= config.reconnect.max_s
    # a first connection tries each node once: an unreachable broker fails within the
    # connect timeout (per node), as the hygiene probe measures
    first = rabbitmq.publish_connect_delays(config, nodes, again=False)
    assert first == [0.0, *delays[1:nodes]]


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:1/0", "redis+sentinel://127.0.0.1:1,127.0.0.1:2/msglab"]
)
def test_redis_clients_are_built_with_the_retries_they_show(url: str) -> None:
    config = ClientConfig(url=url, profile=DeliveryProfile.AT_MOST_ONCE)
    for retries in (redis_common.PUBLISH_RETRIES, redis_common.subscriber_retries(config)):
        client = redis_common.connect(config, retries=retries)
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == config.request_timeout_s
        assert kwargs["socket_connect_timeout"] == config.connect_timeout_s
        assert kwargs["retry"]._retries == retries
        if url.startswith("redis+sentinel"):  # each Sentinel: half the connect timeout, no retry
            for s in client.connection_pool.sentinel_manager.sentinels:
                assert s.connection_pool.connection_kwargs["socket_timeout"] == 2.5
                assert s.connection_pool.connection_kwargs["retry"]._retries == 0
        client.close()
    for transport in (RedisStreamsTransport, RedisPubSubTransport):
        shown = transport.profile_settings()["at-most-once"]
        assert shown["failover publish"].startswith(f"retry={redis_common.PUBLISH_RETRIES}:")
        assert shown["failover consume"].startswith(
            f"retry={redis_common.subscriber_retries(config)} "
        )
        assert shown["connection"].startswith("socket_connect_timeout=5, socket_timeout=10")
