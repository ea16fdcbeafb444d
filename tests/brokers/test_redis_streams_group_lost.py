"""Redis Streams on the real Redis: a subscriber whose group the server lost (a restart
without the data, a failover to a replica behind) creates it again and reads on."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.message import Message
from msglab.testing.contract import Collector

pytestmark = pytest.mark.redis


def test_a_lost_group_is_created_again_and_what_the_server_holds_is_delivered(
    redis_server: Any, unique_name: str
) -> None:
    transport = open_transport("redis-streams", ClientConfig(url=redis_server.url))
    collector = Collector(transport, unique_name, "g")
    publisher = transport.publisher()
    raw = redis.Redis.from_url(redis_server.url)
    try:
        before = [Message(b"before") for _ in range(5)]
        publisher.publish(unique_name, before)
        assert collector.wait_for({m.id for m in before}, 10)
        raw.delete(unique_name)  # the stream and its group are gone, as after a lost AOF tail
        after = [Message(b"after") for _ in range(5)]
        publisher.publish(unique_name, after)
        assert collector.wait_for({m.id for m in after}, 10), "the subscriber stopped reading"
        assert collector.error is None
    finally:
        collector.stop()
        publisher.close()
        raw.delete(unique_name)
