"""The ``exactly-once`` profile on the real Kafka broker: an App consumer copying ``in`` to
``out`` in transactions. A reader with ``read_committed`` must see each input's output once
(counted by the ``causation-id`` header, the input's id); a reader with ``read_uncommitted``
shows what the transactions discarded (aborted outputs stay in the log)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from msglab.app import App, Context, DeadLetter, DeadLetterRecord, NonRetryable, Retry
from msglab.app.context import CAUSATION_HEADER
from msglab.app.records import dlq_topic
from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.lag import total as lag_total
from msglab.message import Message
from msglab.ports import LagReader, TopicAdmin
from msglab.profiles import DeliveryProfile
from tests.app.helpers import running, wait_until

pytestmark = pytest.mark.kafka

N = 2000
GROUP = "eos-g"
QUIET_S = 2.0  # after the last expected output: how long a late duplicate has to show up


@pytest.fixture
def config(kafka_server: Any) -> ClientConfig:
    return ClientConfig(
        url=kafka_server.url,
        profile=DeliveryProfile.EXACTLY_ONCE,
        session_timeout_s=6.0,
        partitions=4,
    )


@pytest.fixture
def topics(config: ClientConfig, unique_name: str) -> Iterator[tuple[str, str]]:
    pair = (f"{unique_name}_in", f"{unique_name}_out")
    yield pair
    admin = open_transport("kafka", config)
    assert isinstance(admin, TopicAdmin)
    for topic in (*pair, dlq_topic(pair[0])):
        admin.delete_topic(topic, [GROUP])


def read_log(url: str, topic: str, isolation: str, until: int, timeout_s: float) -> list[Message]:
    """Every message of ``topic`` from its start, read by a raw client with ``isolation``
    (``read_committed`` / ``read_uncommitted``) outside any group: until ``until`` distinct
    causations were read and nothing came for QUIET_S, or ``timeout_s``."""
    consumer = Consumer(
        {
            "bootstrap.servers": url,
            "group.id": "unused",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    try:
        deadline = time.monotonic() + timeout_s
        partitions: list[int] = []
        while not partitions and time.monotonic() < deadline:  # the pipeline makes the topic
            meta = consumer.list_topics(topic, timeout=10)
            partitions = sorted(meta.topics[topic].partitions)
            if not partitions:
                time.sleep(0.2)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])  # 0: the start
        got: list[Message] = []
        causes: set[str] = set()
        last = time.monotonic()
        while time.monotonic() < deadline:
            if len(causes) >= until and time.monotonic() - last > QUIET_S:
                break
            for msg in consumer.consume(500, 0.2):
                if msg.error() is not None:
                    continue
                headers = {k: (v or b"").decode() for k, v in msg.headers() or ()}
                got.append(Message(msg.value() or b"", headers=headers))
                causes.add(headers.get(CAUSATION_HEADER, ""))
                last = time.monotonic()
        return got
    finally:
        consumer.close()


def causations(messages: list[Message]) -> Counter[str]:
    return Counter(m.headers.get(CAUSATION_HEADER, "") for m in messages)


def publish_inputs(config: ClientConfig, topic: str, count: int) -> list[Message]:
    sent = [Message(f"m{i}".encode(), key=f"k{i % 16}") for i in range(count)]
    pub = open_transport("kafka", config).publisher()
    pub.publish(topic, sent)
    pub.close()
    return sent


def assert_each_once(outputs: list[Message], sent: list[Message]) -> None:
    counts = causations(outputs)
    missing = [m.id for m in sent if m.id not in counts]
    twice = {cause: n for cause, n in counts.items() if n > 1}
    assert not missing, f"{len(missing)} input(s) without an output (read_committed)"
    assert not twice, f"{len(twice)} input(s) with more than one output: {list(twice)[:3]}"
    assert set(counts) == {m.id for m in sent}, "outputs of messages never sent"


def test_a_pipeline_copies_each_message_exactly_once(
    config: ClientConfig, topics: tuple[str, str]
) -> None:
    source, sink = topics
    app = App("eos")  # the default middleware: DeadLetter, Retry (in place here)
    handled = Counter[str]()

    @app.consumer(source, transport="kafka", group=GROUP, profile="exactly-once")
    def copy(ctx: Context) -> None:
        handled[ctx.message.id] += 1
        ctx.publish(sink, ctx.message.payload.upper(), key=ctx.message.key)

    with running(app, config) as runtime:
        assert runtime.wait_consuming(60)
        began = time.monotonic()
        sent = publish_inputs(config, source, N)
        published = time.monotonic() - began
        wait_until(lambda: sum(handled.values()) >= N, 120, f"{N} messages handled")
        handled_s = time.monotonic() - began
    committed = read_log(config.url, sink, "read_committed", N, 60)
    print(
        f"\n{N} messages: published in {published:.2f}s, handled in {handled_s:.2f}s; "
        f"read_committed: {len(committed)} outputs; handler runs: {sum(handled.values())}"
    )
    assert_each_once(committed, sent)
    assert sorted(m.payload for m in committed) == sorted(m.payload.upper() for m in sent)
    transport = open_transport("kafka", config)
    assert isinstance(transport, LagReader)
    assert lag_total(transport.lag(source, GROUP)) == 0, "offsets not committed with the outputs"


WORKER = """
import os
import time

from msglab.app import App, Context

SOURCE, SINK = os.environ["EOS_SOURCE"], os.environ["EOS_SINK"]
app = App("eos-killed")


@app.consumer(SOURCE, transport="kafka", group="eos-g", profile="exactly-once", max_messages=50)
def copy(ctx: Context) -> None:
    time.sleep(0.002)  # a handler doing some work: the kill lands inside a transaction
    ctx.publish(SINK, ctx.message.payload, key=ctx.message.key)
"""


def _worker(tmp_path: Path, source: str, sink: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "msglab", "worker", "eos_worker:app", "--instance", "w0"],
        cwd=tmp_path,
        env={**os.environ, "EOS_SOURCE": source, "EOS_SINK": sink},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    out = proc.stdout

    def read() -> None:
        for line in out:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return proc, lines


def test_a_killed_worker_started_again_leaves_each_output_once(
    config: ClientConfig, topics: tuple[str, str], tmp_path: Path
) -> None:
    """SIGKILL in mid-stream (a transaction open), then the same instance again: its
    ``init_transactions`` aborts the dead one's transaction, and the group resumes from the
    offsets committed with the outputs."""
    source, sink = topics
    (tmp_path / "eos_worker.py").write_text(WORKER)
    sent = publish_inputs(config, source, N)
    first, log = _worker(tmp_path, source, sink)
    try:
        consuming = lambda: any("consuming" in line for line in log)  # noqa: E731
        wait_until(consuming, 60, "the worker consuming:\n" + "\n".join(log))
        began = time.monotonic()

        def outputs_so_far() -> int:
            return len(read_log(config.url, sink, "read_uncommitted", 0, 0.3))

        wait_until(lambda: outputs_so_far() >= N // 3, 60, f"{N // 3} outputs")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    killed_at = time.monotonic() - began
    second, log2 = _worker(tmp_path, source, sink)
    try:
        committed = read_log(config.url, sink, "read_committed", N, 120)
        done_s = time.monotonic() - began
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, "\n".join(log2)
    uncommitted = read_log(config.url, sink, "read_uncommitted", N, 30)
    seen = causations(uncommitted)
    print(
        f"\nkilled {killed_at:.2f}s after the first output; all {N} committed "
        f"{done_s:.2f}s after it. read_committed: {len(committed)} outputs; read_uncommitted: "
        f"{len(uncommitted)} records, {sum(n - 1 for n in seen.values())} duplicates "
        f"(aborted by the restart), {len(seen)} distinct"
    )
    assert_each_once(committed, sent)


def test_a_handler_that_raises_on_a_batch_aborts_it_and_it_comes_again_once(
    config: ClientConfig, topics: tuple[str, str]
) -> None:
    """A batch handler publishes its outputs, then raises once: the transaction aborts (its
    outputs are in the log, but aborted), the batch is read again after the retry's delay, and
    read_committed shows each output once."""
    source, sink = topics
    app = App("eos", middleware=[DeadLetter(), Retry(attempts=3, first_s=0.3, jitter=0)])
    calls: list[tuple[int, int]] = []  # (attempt, size)
    failed: list[str] = []

    @app.consumer(source, transport="kafka", group=GROUP, profile="exactly-once", batch=True)
    def copy(ctx: Context) -> None:
        calls.append((ctx.attempt, len(ctx.messages)))
        for m in ctx.messages:  # a batch's outputs name their own input
            ctx.publish(sink, m.payload, key=m.key, headers={CAUSATION_HEADER: m.id})
        if not failed:
            failed.extend(m.id for m in ctx.messages)
            time.sleep(0.3)  # the outputs may leave the client (linger.ms 5) before the abort
            raise RuntimeError("once")

    count = 200
    with running(app, config) as runtime:
        assert runtime.wait_consuming(60)
        sent = publish_inputs(config, source, count)
        committed = read_log(config.url, sink, "read_committed", count, 60)
    uncommitted = read_log(config.url, sink, "read_uncommitted", count, 30)
    aborted = sum(n - 1 for n in causations(uncommitted).values())
    print(f"\ncalls (attempt, size): {calls}; aborted outputs in the log: {aborted}")
    assert_each_once(committed, sent)
    assert failed and any(attempt == 2 for attempt, _ in calls), "the batch did not come again"
    # what the failed run published reached the log (aborted) unless the abort purged it
    # first: both happen (the first write to a new topic waits for its metadata)
    assert aborted <= len(failed), "more aborted outputs than the aborted batch had"
    transport = open_transport("kafka", config)
    assert isinstance(transport, LagReader)
    assert lag_total(transport.lag(source, GROUP)) == 0


def test_a_dead_letter_is_written_once_inside_the_transaction(
    config: ClientConfig, topics: tuple[str, str]
) -> None:
    """A NonRetryable message goes to ``<in>.dlq`` in its batch's transaction: one dead letter
    read_committed, the others' outputs once."""
    source, sink = topics
    app = App("eos")

    @app.consumer(source, transport="kafka", group=GROUP, profile="exactly-once")
    def copy(ctx: Context) -> None:
        if ctx.message.payload == b"m7":
            raise NonRetryable("m7 is poison")
        ctx.publish(sink, ctx.message.payload, key=ctx.message.key)

    with running(app, config) as runtime:
        assert runtime.wait_consuming(60)
        sent = publish_inputs(config, source, 50)
        committed = read_log(config.url, sink, "read_committed", 49, 60)
    poison = next(m for m in sent if m.payload == b"m7")
    assert_each_once(committed, [m for m in sent if m is not poison])
    letters = open_transport("kafka", config).subscriber("eos-dlq-reader")
    found: list[Message] = []
    for d in letters.subscribe(dlq_topic(source)):
        found.append(d.message)
        d.ack()
        break
    time.sleep(QUIET_S)
    letters.close()
    record = DeadLetterRecord.parse(found[0])
    assert record is not None and record.message.id == poison.id
    assert record.failure.error_type == "NonRetryable"
    dlq = read_log(config.url, dlq_topic(source), "read_committed", 0, 5)
    assert len(dlq) == 1, f"{len(dlq)} dead letters for one poison message"
