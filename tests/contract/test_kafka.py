"""The contract on Apache Kafka, against msglab's real KRaft broker."""

from typing import Any

import pytest

from msglab.config import ClientConfig
from msglab.testing.contract import Features, TransportContract

pytestmark = pytest.mark.kafka


class TestKafka(TransportContract):
    transport_name = "kafka"
    features = Features(
        persistent=True,
        consumer_groups=True,
        nack_redelivers=True,
        redelivered_flag=False,
        per_key_order=True,
        service="kafka",
    )

    @pytest.fixture
    def config(self, kafka_server: Any) -> ClientConfig:
        return ClientConfig(url=kafka_server.url, session_timeout_s=6.0, partitions=4)
