"""``KafkaTransactionalSubscriber`` on the real broker: a second subscriber with the same
identity (a worker started again while the old one still runs) fences the first, whose
transaction can then neither commit nor leave anything a read_committed reader sees; a commit
that hangs in librdkafka is given up after its deadline, and the next instance takes over."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.errors import FencedError, TransportError
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


class _Hung:
    """A transactional producer whose ``send_offsets_to_transaction`` never returns, as
    librdkafka's does when the group coordinator went away (librdkafka #5456)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.release = threading.Event()

    def send_offsets_to_transaction(self, *args: Any) -> None:
        self.release.wait()  # past every timeout it was given

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_commit_that_hangs_is_given_up_and_the_next_instance_fences_it(
    kafka_server: Any, topics: tuple[str, str]
) -> None:
    source, sink = topics
    config = ClientConfig(
        url=kafka_server.url,
        profile=DeliveryProfile.EXACTLY_ONCE,
        session_timeout_s=6.0,
        request_timeout_s=1.0,  # commit's deadline: 3 x 1 s + the grace
    )
    transport: Any = open_transport("kafka", config)
    pub = transport.publisher()
    pub.publish(source, [Message(f"m{i}".encode()) for i in range(10)])
    pub.close()
    stuck = transport.transactional(GROUP, "w1")
    batch = next(iter(stuck.batches(source, 100)))
    stuck.begin()
    stuck.publish(sink, [Message(b"from the stuck one")])
    hung = _Hung(stuck._producer)
    stuck._producer = hung
    began = time.monotonic()
    try:
        with pytest.raises(TransportError, match="did not return within 8s"):
            stuck.commit(batch)
        waited = time.monotonic() - began
        stuck.close()  # leaves the group; the hung producer is not touched
        fresh = transport.transactional(GROUP, "w1")
        copied: list[bytes] = []
        for again in fresh.batches(source, 100):  # from the start: no offset was committed
            fresh.begin()
            fresh.publish(sink, [Message(m.payload) for m in again.messages])
            fresh.commit(again)
            copied += [m.payload for m in again.messages]
            if len(copied) >= 10 or time.monotonic() - began > 60:
                break
        fresh.close()
    finally:
        hung.release.set()
    assert 8 <= waited < 12
    assert sorted(copied) == sorted(f"m{i}".encode() for i in range(10))
    reader = Reader(transport, sink, "eos-hung-reader")  # read_committed
    time.sleep(5)
    reader.stop()
    assert sorted(m.payload for m in reader.messages) == sorted(copied)  # none from the stuck
