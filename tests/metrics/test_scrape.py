"""A real Prometheus scrape of a consumer's metrics on a real broker with a real backlog:
processed and the group's lag move as the consumer works."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.metrics.exporter import Metrics
from msglab.metrics.poller import LagPoller
from msglab.ports import TopicAdmin
from msglab.testing.contract import make_messages
from tests.metrics.test_exporter import Samples, scrape


def lag_of(samples: dict[Any, float], topic: str) -> float:
    """The group's lag summed over its partitions, as ``sum(msglab_consumer_lag)`` would."""
    return sum(
        v
        for (name, lbl), v in samples.items()
        if name == "msglab_consumer_lag" and ("topic", topic) in lbl
    )


def scrape_until(port: int, poller: LagPoller, done: Callable[[Samples], bool]) -> Samples:
    """Poll the lag and scrape until ``done`` (the broker applies a commit a moment after the
    client sent it), at most 10 s: then the last scrape, for the assertions to show."""
    deadline = time.monotonic() + 10
    while True:
        poller.poll_once()
        got = scrape(port)
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


@pytest.mark.parametrize(
    ("transport", "server"),
    [
        pytest.param("kafka", "kafka_server", marks=pytest.mark.kafka),
        pytest.param("redis-streams", "redis_server", marks=pytest.mark.redis),
    ],
)
def test_a_scrape_shows_processed_and_lag_moving(
    transport: str, server: str, unique_name: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(server).url
    t = open_transport(transport, ClientConfig(url=url, partitions=3, session_timeout_s=6.0))
    topic, group = unique_name, "workers"
    m = Metrics()
    served = m.serve(0)
    poller = LagPoller(t, [(topic, group)], m)
    sub = t.subscriber(group)
    try:
        deliveries = sub.subscribe(topic)
        pub = t.publisher()
        pub.publish(topic, make_messages(100, keys=9))
        pub.close()
        poller.poll_once()
        before = scrape(served.port)
        assert lag_of(before, topic) == 100
        assert ("msglab_messages_processed_total", ()) not in before
        for n, delivery in enumerate(deliveries, 1):
            m.received(topic, group, transport)
            delivery.ack()
            m.processed(topic, group, transport)
            if n == 40:
                break
        sub.close()  # acks are sent (Streams) and committed (Kafka) on close at the latest
        after = scrape_until(served.port, poller, lambda got: lag_of(got, topic) == 60)
        key = (("group", group), ("topic", topic), ("transport", transport))
        assert after[("msglab_messages_processed_total", key)] == 40
        assert lag_of(after, topic) == 60
        partitions = len(t.lag(topic, group))  # Kafka: 3, a stream: 1
        assert sum(name == "msglab_consumer_lag" for name, _ in after) == partitions
    finally:
        sub.close()
        served.close()
        if isinstance(t, TopicAdmin):
            t.delete_topic(topic, [group])
