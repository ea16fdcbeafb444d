"""The contract on Redis Streams, against msglab's real Redis."""

from typing import Any

import pytest

from msglab.config import ClientConfig
from msglab.testing.contract import Features, TransportContract

pytestmark = pytest.mark.redis


class TestRedisStreams(TransportContract):
    transport_name = "redis-streams"
    features = Features(
        persistent=True,
        consumer_groups=True,
        nack_redelivers=True,
        redelivered_flag=True,
        per_key_order=True,
        service="redis",
    )

    @pytest.fixture
    def config(self, redis_server: Any) -> ClientConfig:
        return ClientConfig(url=redis_server.url, claim_idle_s=1.0)
