"""The runtime on the in-memory transport: non-blocking retry, dead letters, batches, async
handlers, emitted messages, a restart in the middle of a retry."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import pytest

from msglab.app import App, Context, DeadLetter, DeadLetterRecord, Retry, Runtime, correlation
from msglab.app.due import DueBuffer
from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.errors import UsageError
from msglab.message import Delivery, Message
from msglab.ports import Transport
from tests.app.helpers import Reader, Recorder, running, wait_until


@pytest.fixture
def config() -> ClientConfig:
    return ClientConfig(url=f"memory://app-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def transport(config: ClientConfig) -> Transport:
    return open_transport("memory", config)


def publish(transport: Transport, topic: str, messages: list[Message]) -> None:
    pub = transport.publisher()
    pub.publish(topic, messages)
    pub.close()


class Poison(Exception):
    pass


def test_a_poison_message_is_dead_lettered_while_later_messages_flow(
    config: ClientConfig, transport: Transport
) -> None:
    rec = Recorder()
    app = App(
        "svc", middleware=[DeadLetter(), Retry(attempts=3, first_s=0.3, jitter=0.0)], observer=rec
    )
    handled: list[tuple[str, float]] = []
    tried: list[tuple[int, float]] = []

    @app.consumer("orders", transport="memory", group="billing")
    def bill(ctx: Context) -> None:
        if ctx.message.payload == b"poison":
            tried.append((ctx.attempt, time.monotonic()))
            raise Poison("cannot bill order 7")
        handled.append((ctx.message.id, time.monotonic()))

    poison = Message(b"poison", key="order-7", headers={"trace": "t1"})
    good = [Message(f"ok{i}".encode(), key="order-7") for i in range(5)]
    dlq = Reader(transport, "orders.dlq")
    try:
        with running(app, config):
            publish(transport, "orders", [poison, *good])
            (dead,) = dlq.wait(1, 20)
            time.sleep(0.3)  # nothing more comes
        assert len(dlq.messages) == 1
    finally:
        dlq.stop()
    assert {mid for mid, _ in handled} == {m.id for m in good}
    assert [a for a, _ in tried] == [1, 2, 3]
    assert max(t for _, t in handled) < tried[1][1], "later messages waited for the retry"
    assert tried[1][1] - tried[0][1] >= 0.3 and tried[2][1] - tried[1][1] >= 0.6
    record = DeadLetterRecord.parse(dead)
    assert record is not None
    assert record.message == poison, "payload, key, headers or id changed"
    f = record.failure
    assert (f.origin, f.group, f.handler, f.attempt) == ("orders", "billing", "bill", 3)
    assert (f.error_type, f.error) == ("Poison", "cannot bill order 7")
    assert f.first_failure < f.last_failure <= time.time()
    assert rec.kinds().count("retried") == 2 and rec.kinds().count("dead_lettered") == 1


def test_an_undecodable_payload_goes_to_the_dead_letters_with_the_decoding_error(
    config: ClientConfig, transport: Transport
) -> None:
    app = App("svc")
    values: list[Any] = []

    @app.consumer("orders", transport="memory", group="g", decode=json.loads)
    def handle(ctx: Context) -> None:
        values.append(ctx.value)

    dlq = Reader(transport, "orders.dlq")
    try:
        with running(app, config):
            publish(transport, "orders", [Message(b"{oops"), Message(b'{"n": 1}')])
            (dead,) = dlq.wait(1)
            wait_until(lambda: values == [{"n": 1}], what="the good message")
    finally:
        dlq.stop()
    record = DeadLetterRecord.parse(dead)
    assert record is not None and record.failure.attempt == 1
    assert record.failure.error_type == "DecodeError"
    assert "JSONDecodeError" in record.failure.error


def test_batch_and_async_handlers_and_emitted_messages(
    config: ClientConfig, transport: Transport
) -> None:
    app = App("svc", middleware=[correlation])
    batches: list[int] = []
    emitted_from: list[str] = []

    @app.consumer("orders", transport="memory", group="b", batch=True, max_messages=50)
    def in_batches(ctx: Context) -> None:
        batches.append(len(ctx.messages))

    @app.consumer("orders", transport="memory", group="a")
    async def forward(ctx: Context) -> None:
        await asyncio.sleep(0)
        emitted_from.append(ctx.message.id)
        ctx.publish("invoices", b"invoice-for-" + ctx.message.payload, key=ctx.message.key)

    sent = [Message(f"{i}".encode(), key="k") for i in range(20)]
    invoices = Reader(transport, "invoices")
    try:
        with running(app, config):
            publish(transport, "orders", sent)
            got = invoices.wait(20)
            wait_until(lambda: sum(batches) == 20, what="the batches")
    finally:
        invoices.stop()
    assert max(batches) > 1, "the batch handler got single messages"
    assert sorted(emitted_from) == sorted(m.id for m in sent)
    by_cause = {m.headers["causation-id"]: m for m in got}
    for m in sent:
        assert by_cause[m.id].payload == b"invoice-for-" + m.payload
        assert by_cause[m.id].headers["correlation-id"] == m.id


def test_the_attempt_count_survives_a_restart_in_the_middle_of_a_retry(
    config: ClientConfig, transport: Transport
) -> None:
    attempts: list[int] = []

    def build() -> App:
        app = App("svc", middleware=[DeadLetter(), Retry(attempts=4, first_s=0.5, jitter=0.0)])

        @app.consumer("orders", transport="memory", group="g")
        def handle(ctx: Context) -> None:
            attempts.append(ctx.attempt)
            raise Poison("still failing")

        return app

    dlq = Reader(transport, "orders.dlq")
    try:
        with running(build(), config):
            publish(transport, "orders", [Message(b"p")])
            wait_until(lambda: attempts == [1, 2], what="two attempts")
        # stopped while attempt 3 waits in the retry flow (due 1 s after attempt 2)
        assert attempts == [1, 2]
        with running(build(), config):
            (dead,) = dlq.wait(1, 20)
    finally:
        dlq.stop()
    assert attempts == [1, 2, 3, 4], "the attempt count started again after the restart"
    record = DeadLetterRecord.parse(dead)
    assert record is not None and record.failure.attempt == 4


def test_a_groups_retry_entries_are_not_run_by_another_group(
    config: ClientConfig, transport: Transport
) -> None:
    runs: dict[str, list[int]] = {"a": [], "b": []}
    app = App("svc", middleware=[DeadLetter(), Retry(attempts=2, first_s=0.1, jitter=0.0)])

    @app.consumer("orders", transport="memory", group="a")
    def fails(ctx: Context) -> None:
        runs["a"].append(ctx.attempt)
        raise Poison("a fails")

    @app.consumer("orders", transport="memory", group="b")
    def works(ctx: Context) -> None:
        runs["b"].append(ctx.attempt)

    dlq = Reader(transport, "orders.dlq")
    try:
        with running(app, config):
            publish(transport, "orders", [Message(b"m")])
            dlq.wait(1)
            time.sleep(0.5)
    finally:
        dlq.stop()
    assert runs == {"a": [1, 2], "b": [1]}


def test_an_app_without_handlers_or_an_unknown_one_is_refused(config: ClientConfig) -> None:
    with pytest.raises(UsageError, match="no handlers"):
        Runtime(App("empty"), lambda n, p: open_transport(n, config))
    app = App("svc")
    app.add(lambda c: None, "orders", transport="memory", group="g", name="one")
    with pytest.raises(UsageError, match="no handler 'two'"):
        Runtime(app, lambda n, p: open_transport(n, config), only=["two"])


def test_the_due_buffer_runs_by_due_time_and_acks_in_arrival_order() -> None:
    acked: list[str] = []

    def settle(d: Delivery, ok: bool, requeue: bool) -> None:
        acked.append(d.message.id)

    def delivery(mid: str) -> Delivery:
        return Delivery(Message(b"", id=mid), "t.retry", 1, False, settle)

    buf = DueBuffer()
    assert buf.hold(delivery("late"), due=10.0, entry="late", key="late")
    assert not buf.hold(delivery("late"), due=10.0, entry="late", key="late"), "held twice"
    buf.hold(delivery("soon"), due=1.0, entry="soon")
    buf.skip(delivery("other-group"))
    assert buf.pop_due(0.5) is None
    soon = buf.pop_due(1.0)
    assert soon is not None and soon.entry == "soon" and buf.pop_due(1.0) is None
    buf.done(soon)
    assert acked == [], "acked past an earlier entry still held"
    again = buf.pop_due(10.0)
    assert again is not None and again.entry == "late"
    buf.again(again, due=12.0)
    assert buf.pop_due(11.0) is None
    retried = buf.pop_due(12.0)
    assert retried is not None
    buf.done(retried)
    assert acked == ["late", "soon", "other-group"]


def test_stop_lets_the_handler_in_hand_finish_and_settle(
    config: ClientConfig, transport: Transport
) -> None:
    app = App("svc", middleware=[])
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    @app.consumer("orders", transport="memory", group="g")
    def slow(ctx: Context) -> None:
        started.set()
        release.wait(5)
        done.append(ctx.message.id)

    runtime = Runtime(app, lambda n, p: open_transport(n, config.with_profile(p)))
    runtime.start()
    first, second = Message(b"1"), Message(b"2")
    publish(transport, "orders", [first, second])
    assert started.wait(5)
    runtime.request_stop()
    threading.Timer(0.3, release.set).start()
    assert runtime.stop(5)
    assert done == [first.id], "stop did not let the handler in hand finish, or fetched more"
    rest = Reader(transport, "orders", group="g")
    try:
        got = rest.wait(1)
    finally:
        rest.stop()
    assert [m.id for m in got] == [second.id], "the first came again or the second was lost"


def test_stop_with_handler_threads_settles_every_delivery_handed_in(
    config: ClientConfig, transport: Transport
) -> None:
    app = App("svc", middleware=[])
    started, release = threading.Semaphore(0), threading.Event()
    done: list[str] = []

    @app.consumer("orders", transport="memory", group="g", concurrency=2)
    def slow(ctx: Context) -> None:
        started.release()
        release.wait(5)
        done.append(ctx.message.id)

    runtime = Runtime(app, lambda n, p: open_transport(n, config.with_profile(p)))
    runtime.start()
    # crc32 % 2: a 1, d 0 (two threads, one key each)
    sent = [Message(b"1", key="a"), Message(b"2", key="d"), Message(b"3", key="a")]
    publish(transport, "orders", sent)
    assert started.acquire(timeout=5) and started.acquire(timeout=5), "two did not run at once"
    runtime.request_stop()
    threading.Timer(0.3, release.set).start()
    assert runtime.stop(5)
    assert sorted(done) == sorted(m.id for m in sent)
    rest = Reader(transport, "orders", group="g")
    time.sleep(0.5)
    rest.stop()
    assert rest.messages == [], "a delivery handled before the stop was not acked"


def test_concurrency_is_for_per_message_handlers(config: ClientConfig) -> None:
    app = App("svc")
    with pytest.raises(UsageError, match="concurrency 0"):
        app.add(lambda c: None, "orders", transport="memory", group="g", concurrency=0)
    with pytest.raises(UsageError, match="per-message handlers"):
        app.add(lambda c: None, "orders", transport="memory", group="g", batch=True, concurrency=2)
    app.add(lambda c: None, "orders", transport="memory", group="g", name="one")
    app.add(lambda c: None, "refunds", transport="memory", group="g", name="many", batch=True)
    runtime = Runtime(app, lambda n, p: open_transport(n, config), concurrency=3)
    assert {s.name: s.concurrency for s in runtime.specs} == {"one": 3, "many": 1}
