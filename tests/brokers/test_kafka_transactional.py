"""``KafkaTransactionalSubscriber`` on the real broker: a second subscriber with the same
identity (a worker started again while the old one still runs) fences the first, whose
transaction can then neither commit nor leave anything a read_committed reader sees."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.errors import FencedError
from msglab.message import Message
from msglab.ports import TopicAdmin, TransactionalTransport
from msglab.profiles import DeliveryProfile
from tests.app.helpers import Reader

pytestmark = pytest.mark.kafka
GROUP = "eos-fence"


@pytest.fixture
def transport(kafka_server: Any) -> TransactionalTransport:
    config = ClientConfig(
        url=kafka_server.url, profile=DeliveryProfile.EXACTLY_ONCE, session_timeout_s=6.0
    )
    built = open_transport("kafka", config)
    assert isinstance(built, TransactionalTransport)
    return built


@pytest.fixture
def topics(transport: Any, unique_name: str) -> Iterator[tuple[str, str]]:
    pair = (f"{unique_name}_in", f"{unique_name}_out")
    yield pair
    assert isinstance(transport, TopicAdmin)
    for topic in pair:
        transport.delete_topic(topic, [GROUP])


def test_a_second_instance_with_the_same_identity_fences_the_first(
    transport: Any, topics: tuple[str, str]
) -> None:
    source, sink = topics
    pub = transport.publisher()
    pub.publish(source, [Message(f"m{i}".encode()) for i in range(10)])
    pub.close()
    old = transport.transactional(GROUP, "w0")
    batch = next(iter(old.batches(source, 100)))
    old.begin()
    old.publish(sink, [Message(b"from the zombie")])
    new = transport.transactional(GROUP, "w0")
    began = time.monotonic()
    new.batches(source, 100)  # init_transactions: the old one's transaction aborted, it fenced
    fenced_in = time.monotonic() - began
    try:
        with pytest.raises(FencedError, match=r"a newer instance with this transactional\.id"):
            old.commit(batch)
    finally:
        old.close()
        new.close()
    print(f"\nthe second instance's init_transactions fenced the first in {fenced_in:.2f}s")
    reader = Reader(transport, sink, "eos-fence-reader")  # read_committed (exactly-once)
    time.sleep(5)
    reader.stop()
    assert reader.messages == [], "a fenced producer's output became visible"
