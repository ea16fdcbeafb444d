"""The contract on the in-memory reference transport."""

import pytest

from msglab.config import ClientConfig
from msglab.testing.contract import Features, TransportContract


class TestMemory(TransportContract):
    transport_name = "memory"
    features = Features(
        persistent=True,
        consumer_groups=True,
        nack_redelivers=True,
        redelivered_flag=True,
        per_key_order=True,
        service=None,
        across_processes=False,
    )

    @pytest.fixture
    def config(self, unique_name: str) -> ClientConfig:
        return ClientConfig(url=f"memory://{unique_name}")
