"""The contract on RabbitMQ, against msglab's real node."""

from typing import Any

import pytest

from msglab.config import ClientConfig
from msglab.testing.contract import Features, TransportContract

pytestmark = pytest.mark.rabbitmq


class TestRabbitMQ(TransportContract):
    transport_name = "rabbitmq"
    features = Features(
        persistent=True,
        consumer_groups=True,
        nack_redelivers=True,
        redelivered_flag=True,
        per_key_order=True,
        service="rabbitmq",
    )

    @pytest.fixture
    def config(self, rabbitmq_server: Any) -> ClientConfig:
        return ClientConfig(url=rabbitmq_server.url, prefetch=100)
