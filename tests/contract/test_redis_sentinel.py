"""The contract on both Redis transports through Redis Sentinel (``redis+sentinel://``), against
msglab's real redis-sentinel: the clients find the primary by asking the Sentinels."""

from collections.abc import Iterator

import pytest

from msglab.config import ClientConfig
from msglab.errors import MsglabError
from msglab.infra.native import NativeBackend
from msglab.infra.redis_sentinel import RedisSentinel
from msglab.profiles import DeliveryProfile
from msglab.settings import Settings, in_ci
from msglab.testing.contract import Features, TransportContract

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def sentinel_url() -> Iterator[str]:
    """redis-sentinel up for the module, its ``redis+sentinel://`` URL; down after."""
    settings = Settings.from_env()
    backend = NativeBackend(settings)
    try:
        backend.up(["redis-sentinel"])
    except MsglabError as exc:
        if in_ci():
            pytest.fail(f"redis-sentinel could not start: {exc}", pytrace=False)
        pytest.skip(f"redis-sentinel could not start: {exc}")
    try:
        yield RedisSentinel(settings).url
    finally:
        backend.down(["redis-sentinel"])


class TestRedisStreamsThroughSentinel(TransportContract):
    transport_name = "redis-streams"
    features = Features(
        persistent=True,
        consumer_groups=True,
        nack_redelivers=True,
        redelivered_flag=True,
        per_key_order=True,
        service=None,  # a node killed is the lab's leader-kill (tests/lab/test_sentinel_runs.py)
    )

    @pytest.fixture
    def config(self, sentinel_url: str) -> ClientConfig:
        return ClientConfig(url=sentinel_url, claim_idle_s=1.0)


class TestRedisPubSubThroughSentinel(TransportContract):
    transport_name = "redis-pubsub"
    features = Features(
        persistent=False,
        consumer_groups=False,
        nack_redelivers=False,
        redelivered_flag=False,
        per_key_order=True,
        service=None,
        at_least_once=False,
    )

    @pytest.fixture
    def config(self, sentinel_url: str) -> ClientConfig:
        return ClientConfig(url=sentinel_url, profile=DeliveryProfile.AT_MOST_ONCE)
