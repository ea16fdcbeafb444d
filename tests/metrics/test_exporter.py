"""msglab.metrics on the memory transport: every series a runtime sets is in what a real HTTP
scrape returns, with its labels; the lag poller sets, drops and survives what it reads."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.errors import ConnectError, UsageError
from msglab.lag import Lag
from msglab.message import Message
from msglab.metrics.exporter import Metrics, export
from msglab.metrics.observer import MetricsObserver
from msglab.metrics.poller import LagPoller
from msglab.ports import Transport
from msglab.profiles import DeliveryProfile

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """GET /metrics as Prometheus does; every sample by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labels(**kv: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kv.items()))


@pytest.fixture
def metrics() -> Iterator[tuple[Metrics, int]]:
    m = Metrics()
    served = m.serve(0)
    yield m, served.port
    served.close()


@pytest.fixture
def memory(unique_name: str) -> Transport:
    return open_transport("memory", ClientConfig(url=f"memory://{unique_name}"))


def test_a_scrape_shows_each_counter_histogram_and_in_flight_with_labels(
    metrics: tuple[Metrics, int],
) -> None:
    m, port = metrics
    for _ in range(3):
        m.received("orders", "billing", "kafka")
        m.in_flight(+1)
    m.processed("orders", "billing", "kafka")
    m.processed("orders", "billing", "kafka")
    m.failed("orders", "billing", "kafka")
    m.retried("orders", "billing", "kafka")
    m.dead_lettered("orders", "billing", "kafka")
    m.dedup_skipped("orders", "shipping", "rabbitmq")
    m.duration("orders", "billing", "kafka", 0.003)
    m.duration("orders", "billing", "kafka", 2.0)
    m.in_flight(-1)
    got = scrape(port)
    billing = labels(topic="orders", group="billing", transport="kafka")
    assert got[("msglab_messages_received_total", billing)] == 3
    assert got[("msglab_messages_processed_total", billing)] == 2
    assert got[("msglab_messages_failed_total", billing)] == 1
    assert got[("msglab_messages_retried_total", billing)] == 1
    assert got[("msglab_messages_dead_lettered_total", billing)] == 1
    shipping = labels(topic="orders", group="shipping", transport="rabbitmq")
    assert got[("msglab_messages_dedup_skipped_total", shipping)] == 1
    assert ("msglab_messages_dedup_skipped_total", billing) not in got
    assert got[("msglab_handler_duration_seconds_count", billing)] == 2
    assert got[("msglab_handler_duration_seconds_sum", billing)] == pytest.approx(2.003)
    le = labels(topic="orders", group="billing", transport="kafka", le="0.005")
    assert got[("msglab_handler_duration_seconds_bucket", le)] == 1
    assert got[("msglab_messages_in_flight", ())] == 2


def test_two_metrics_objects_share_no_series() -> None:
    a, b = Metrics(), Metrics()
    a.processed("t", "g", "memory")
    assert b"msglab_messages_processed_total{" in a.render()
    assert b"msglab_messages_processed_total{" not in b.render()


def test_a_taken_port_is_refused_naming_it() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(UsageError, match=f"127.0.0.1:{port}"):
            Metrics().serve(port)


def test_the_poller_sets_the_lag_per_partition_and_follows_acks(
    metrics: tuple[Metrics, int], memory: Transport
) -> None:
    m, port = metrics
    memory.publisher().publish("t", [Message(b"x") for _ in range(10)])
    poller = LagPoller(memory, [("t", "g"), ("t", "g")], m, every_s=60)
    assert poller.poll_once() == 1  # targets are kept once
    series = (
        "msglab_consumer_lag",
        labels(topic="t", group="g", transport="memory", partition="t"),
    )
    assert scrape(port)[series] == 10
    sub = memory.subscriber("g")
    for n, delivery in enumerate(sub.subscribe("t"), 1):
        delivery.ack()
        if n == 4:
            break
    sub.close()
    poller.poll_once()
    assert scrape(port)[series] == 6


class _Flaky:
    """A LagReader whose reads fail, or say the lag is unknown, as told."""

    name = "flaky"
    config = ClientConfig(url="memory://flaky")
    stores_messages = True

    def __init__(self) -> None:
        self.answers: list[list[Lag] | Exception] = []

    def lag(self, topic: str, group: str) -> list[Lag]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def publisher(self) -> None: ...
    def subscriber(self, group: str) -> None: ...
    @classmethod
    def profile_settings(cls) -> dict[str, dict[str, str]]:
        return {}


def test_a_failed_read_keeps_the_last_figure_and_an_unknown_one_drops_it() -> None:
    m, flaky = Metrics(), _Flaky()
    flaky.answers = [
        [Lag("0", 5), Lag("1", 7)],
        ConnectError("flaky", "127.0.0.1:1", "refused"),
        [Lag("0", None, unacked=3), Lag("1", 2)],
    ]
    poller = LagPoller(flaky, [("t", "g")], m)  # type: ignore[arg-type]
    assert poller.poll_once() == 2
    assert b'partition="1",topic="t",transport="flaky"} 7.0' in m.render()
    assert poller.poll_once() == 0  # logged, not raised: the consumer goes on
    assert b'partition="1",topic="t",transport="flaky"} 7.0' in m.render()
    poller.poll_once()
    text = m.render()
    assert b'partition="0"' not in text  # unknown now: no stale 5
    assert b'partition="1",topic="t",transport="flaky"} 2.0' in text


def test_the_poller_thread_polls_until_stopped(memory: Transport) -> None:
    m = Metrics()
    memory.publisher().publish("t", [Message(b"x")])
    poller = LagPoller(memory, [("t", "g")], m, every_s=0.05)
    poller.start()
    try:
        deadline = time.monotonic() + 5
        while b"msglab_consumer_lag{" not in m.render():
            assert time.monotonic() < deadline, "the thread never polled"
            time.sleep(0.01)
    finally:
        poller.stop()


def test_a_transport_that_stores_nothing_has_no_lag_to_poll() -> None:
    config = ClientConfig(url="redis://127.0.0.1:1/0", profile=DeliveryProfile.AT_MOST_ONCE)
    pubsub = open_transport("redis-pubsub", config)
    with pytest.raises(UsageError, match="stores nothing"):
        LagPoller(pubsub, [("t", "g")], Metrics())


def test_the_runtime_observer_counts_a_batch_and_times_each_call_once() -> None:
    m = Metrics()
    seen = MetricsObserver(m, "kafka")
    seen.received("t", "g", "handle", 5)
    seen.processed("t", "g", "handle", 5, 0.02)
    seen.received("t", "g", "handle", 1)
    seen.failed("t", "g", "handle", 1, 0.5, "ValueError")
    seen.retried("t", "g", "handle", 1, 2)
    seen.dead_lettered("t", "g", "handle", 1)
    seen.dedup_skipped("t", "g", "handle", 3)
    seen.received("t", "g", "handle", 2)  # still being handled
    got = {
        (s.name, s.labels.get("le")): s.value
        for f in text_string_to_metric_families(m.render().decode())
        for s in f.samples
        if not s.name.endswith("_created")
    }
    assert got[("msglab_messages_received_total", None)] == 8
    assert got[("msglab_messages_processed_total", None)] == 5
    assert got[("msglab_messages_failed_total", None)] == 1
    assert got[("msglab_messages_retried_total", None)] == 1
    assert got[("msglab_messages_dead_lettered_total", None)] == 1
    assert got[("msglab_messages_dedup_skipped_total", None)] == 3
    assert got[("msglab_handler_duration_seconds_count", None)] == 2
    assert got[("msglab_handler_duration_seconds_bucket", "0.025")] == 1
    assert got[("msglab_messages_in_flight", None)] == 2


def test_export_serves_the_observer_s_counts_and_the_polled_lag(memory: Transport) -> None:
    memory.publisher().publish("t", [Message(b"x") for _ in range(3)])
    exporting = export(0, [(memory, "t", "g")], every_s=0.05)
    try:
        assert len(exporting.pollers) == 1
        exporting.observer("memory").received("t", "g", "handle", 1)
        exporting.observer("memory").processed("t", "g", "handle", 1, 0.01)
        key = labels(topic="t", group="g", transport="memory")
        lag = ("msglab_consumer_lag", labels(partition="t", **dict(key)))
        deadline = time.monotonic() + 5
        while lag not in (got := scrape(exporting.served.port)):
            assert time.monotonic() < deadline, "the lag was never polled"
            time.sleep(0.05)
        assert got[("msglab_messages_processed_total", key)] == 1
        assert got[lag] == 3
    finally:
        exporting.close()
    with pytest.raises(OSError):
        scrape(exporting.served.port)  # closed: nothing answers


def test_export_on_a_transport_that_stores_nothing_serves_without_a_lag_poller() -> None:
    config = ClientConfig(url="redis://127.0.0.1:1/0", profile=DeliveryProfile.AT_MOST_ONCE)
    exporting = export(0, [(open_transport("redis-pubsub", config), "t", "g")])
    try:
        assert exporting.pollers == ()
        exporting.observer("redis-pubsub").received("t", "g", "handle", 1)
        key = labels(topic="t", group="g", transport="redis-pubsub")
        assert scrape(exporting.served.port)[("msglab_messages_received_total", key)] == 1
    finally:
        exporting.close()
