"""RabbitMQ's batches, on the real RabbitMQ: a batch is what the broker has pushed so far (it
never waits for more), and it is settled with one ``basic_ack(multiple=True)`` only when no
older delivery is still held: a multiple ack would settle that one too."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.message import Batch, Message
from msglab.ports import Publisher, Subscriber, TopicAdmin

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def topic(rabbitmq_server: Any, unique_name: str) -> Iterator[str]:
    """The test's topic; its exchange and group g's queue are deleted after the test."""
    yield unique_name
    transport = open_transport("rabbitmq", ClientConfig(url=rabbitmq_server.url))
    assert isinstance(transport, TopicAdmin)
    transport.delete_topic(unique_name, ["g"])


def ids(batch: Batch) -> set[str]:
    return {m.id for m in batch.messages}


def drain(config: ClientConfig, topic: str, group: str, quiet_s: float = 1.5) -> set[str]:
    """Every message id the group still holds, read (and acked) until quiet."""
    sub = open_transport("rabbitmq", config).subscriber(group)
    seen: set[str] = set()
    last = time.monotonic()
    sub.on_idle(lambda: sub.close() if time.monotonic() - last > quiet_s else None)
    for d in sub.subscribe(topic):
        seen.add(d.message.id)
        last = time.monotonic()
        d.ack()
    return seen


def open_batches(
    url: str, topic: str, limit: int
) -> tuple[ClientConfig, Subscriber, Iterator[Batch], Publisher]:
    """Group g's batches of ``topic`` (prefetch 20, subscribed at once) and a publisher."""
    config = ClientConfig(url=url, prefetch=20)
    transport = open_transport("rabbitmq", config)
    sub = transport.subscriber("g")
    return config, sub, sub.batches(topic, limit), transport.publisher()


@pytest.mark.parametrize("held_first", [True, False])
def test_acking_a_later_batch_leaves_an_older_held_one_unsettled(
    rabbitmq_server: Any, topic: str, held_first: bool
) -> None:
    config, sub, batches, pub = open_batches(rabbitmq_server.url, topic, 5)
    pub.publish(topic, [Message(f"m{i}".encode(), "k") for i in range(20)])
    older, newer = next(batches), next(batches)
    if held_first:
        newer.ack()  # the older batch is still held: the acks must not cover it
    else:
        older.ack()  # the oldest, then the next: one multiple ack each
        newer.ack()
    sub.close()
    again = drain(config, topic, "g")
    if held_first:
        assert ids(older) <= again
        assert not ids(newer) & again
    else:
        assert not (ids(older) | ids(newer)) & again
    assert len(again) == 20 - len(ids(newer)) - (0 if held_first else len(ids(older)))
    pub.close()


def test_a_batch_is_what_was_pushed_handed_out_without_waiting_for_more(
    rabbitmq_server: Any, topic: str
) -> None:
    _, sub, batches, pub = open_batches(rabbitmq_server.url, topic, 10)
    pub.publish(topic, [Message(b"alone")])
    time.sleep(0.3)
    began = time.monotonic()
    lone = next(batches)
    waited = time.monotonic() - began
    lone.ack()
    pub.publish(topic, [Message(f"m{i}".encode()) for i in range(15)])
    sizes: list[int] = []
    while sum(sizes) < 15:
        batch = next(batches)
        sizes.append(len(batch))
        batch.ack()
    sub.close()
    pub.close()
    assert [m.payload for m in lone.messages] == [b"alone"]
    # a grouping batch would hold the lone message for its window or the next empty poll (0.2 s)
    assert waited < 0.15
    assert max(sizes) <= 10 and sum(sizes) == 15
