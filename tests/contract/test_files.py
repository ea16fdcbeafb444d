"""The contract on the file-batch transport, in a fresh directory per test (no server)."""

from pathlib import Path

import pytest

from msglab.config import ClientConfig
from msglab.testing.contract import Features, TransportContract


class TestFiles(TransportContract):
    transport_name = "files"
    features = Features(
        persistent=True,
        consumer_groups=True,
        nack_redelivers=True,
        redelivered_flag=True,
        per_key_order=True,
        service=None,
    )

    @pytest.fixture
    def config(self, tmp_path: Path) -> ClientConfig:
        return ClientConfig(url=f"file://{tmp_path}/exchange")
