"""The contract on Redis pub/sub (at-most-once only), against msglab's real Redis."""

from typing import Any

import pytest

from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.errors import UsageError
from msglab.profiles import DeliveryProfile
from msglab.testing.contract import Features, TransportContract

pytestmark = pytest.mark.redis


class TestRedisPubSub(TransportContract):
    transport_name = "redis-pubsub"
    features = Features(
        persistent=False,
        consumer_groups=False,
        nack_redelivers=False,
        redelivered_flag=False,
        per_key_order=True,
        service="redis",
        at_least_once=False,
    )

    @pytest.fixture
    def config(self, redis_server: Any) -> ClientConfig:
        return ClientConfig(url=redis_server.url, profile=DeliveryProfile.AT_MOST_ONCE)


def test_at_least_once_is_refused_saying_why() -> None:
    with pytest.raises(UsageError, match="stores nothing"):
        open_transport("redis-pubsub", ClientConfig(url="redis://127.0.0.1:1/0"))
