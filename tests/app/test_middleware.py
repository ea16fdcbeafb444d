"""The built-in middleware and the chain's composition, each on a bare Context (no transport)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any

import pytest

from msglab.app import (
    App,
    BatchFailure,
    Context,
    DeadLetter,
    DecodeError,
    Handler,
    HandlerTimeout,
    NonRetryable,
    Retry,
    compose,
    correlation,
    idempotent,
    metrics,
    timeout,
)
from msglab.app.bridge import EventLoopThread, as_handler
from msglab.app.records import FlowError
from msglab.errors import ConfigError, UsageError
from msglab.message import Message
from tests.app.helpers import Recorder


def ctx(*messages: Message, attempt: int = 1, **fields: Any) -> Context:
    return Context(
        messages=list(messages) or [Message(b"x")],
        topic="orders",
        group="billing",
        handler="h",
        attempt=attempt,
        **fields,
    )


class FakeScheduler:
    def __init__(self) -> None:
        self.retried: list[tuple[int, float, str]] = []
        self.dead: list[tuple[int, str]] = []
        self.ids: list[list[str]] = []  # the messages of each retry or dead letter

    def retry_later(self, c: Context, delay_s: float, error: BaseException) -> None:
        self.retried.append((c.attempt, delay_s, type(error).__name__))
        self.ids.append([m.id for m in c.messages])

    def dead_letter(self, c: Context, error: BaseException) -> None:
        self.dead.append((c.attempt, type(error).__name__))
        self.ids.append([m.id for m in c.messages])


def tagging(tag: str, trail: list[str]) -> Any:
    def wrap(inner: Handler) -> Handler:
        def run(c: Context) -> None:
            trail.append(f"{tag}>")
            inner(c)
            trail.append(f"<{tag}")

        return run

    return wrap


def test_compose_runs_the_first_listed_outermost() -> None:
    trail: list[str] = []
    handler = compose(lambda c: trail.append("h"), [tagging("a", trail), tagging("b", trail)])
    handler(ctx())
    assert trail == ["a>", "b>", "h", "<b", "<a"]


def test_app_middleware_wraps_the_handlers_own() -> None:
    trail: list[str] = []
    app = App("svc", middleware=[tagging("app1", trail), tagging("app2", trail)])
    spec = app.add(
        lambda c: trail.append("h"),
        "orders",
        transport="memory",
        group="g",
        middleware=[tagging("own", trail)],
        name="h",
    )
    compose(spec.fn, spec.middleware)(ctx())
    assert trail == ["app1>", "app2>", "own>", "h", "<own", "<app2", "<app1"]


def test_default_middleware_dead_letters_after_retries() -> None:
    app = App("svc")
    spec = app.add(lambda c: None, "orders", transport="memory", group="g")
    assert spec.retries and spec.dead_letters
    bare = App("bare", middleware=[]).add(lambda c: None, "orders", transport="memory", group="g")
    assert not bare.retries and not bare.dead_letters


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"transport": "carrier-pigeon", "group": "g"}, "unknown transport"),
        ({"transport": "memory", "group": "g", "profile": "exactly-twice"}, "unknown profile"),
        ({"transport": "memory", "group": "bad group"}, "invalid group"),
    ],
)
def test_registration_refuses_bad_names(kwargs: dict[str, str], reason: str) -> None:
    with pytest.raises(UsageError, match=reason):
        App("svc").add(lambda c: None, "orders", **kwargs)  # type: ignore[arg-type]


def test_registration_refuses_a_second_handler_for_the_same_group() -> None:
    app = App("svc")
    app.add(lambda c: None, "orders", transport="memory", group="g", name="one")
    with pytest.raises(UsageError, match="already consumes"):
        app.add(lambda c: None, "orders", transport="memory", group="g", name="two")
    with pytest.raises(UsageError, match="two handlers named"):
        app.add(lambda c: None, "other", transport="memory", group="g", name="one")


# -- retry ---------------------------------------------------------------------------------


class Flaky(Exception):
    pass


def test_retry_decides_by_attempt_error_type_and_non_retryable() -> None:
    r = Retry(attempts=3, retry_on=(Flaky,))
    assert r.should_retry(Flaky(), 1) and r.should_retry(Flaky(), 2)
    assert not r.should_retry(Flaky(), 3), "the last attempt is retried"
    assert not r.should_retry(ValueError(), 1), "an error outside retry_on is retried"

    class Permanent(Flaky, NonRetryable):
        pass

    assert not r.should_retry(Permanent(), 1), "a NonRetryable is retried"
    assert not r.should_retry(DecodeError("bad json"), 1)


def test_retry_backoff_doubles_up_to_the_maximum() -> None:
    r = Retry(attempts=10, first_s=0.5, max_s=3.0, jitter=0.0)
    assert [r.delay_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("jitter", [0.1, 0.5])
def test_retry_jitter_stays_within_its_bounds_and_varies(jitter: float) -> None:
    rng = random.Random(7)
    r = Retry(attempts=10, first_s=1.0, max_s=8.0, jitter=jitter, rand=rng.random)
    for attempt in (1, 3, 6):
        base = r.base_delay_s(attempt)
        delays = [r.delay_s(attempt) for _ in range(500)]
        assert min(delays) >= base * (1 - jitter) and max(delays) <= base * (1 + jitter)
        assert max(delays) - min(delays) > base * jitter, "jitter does not spread the delays"
    edge = Retry(first_s=2.0, max_s=2.0, jitter=jitter, rand=lambda: 0.0)
    assert edge.delay_s(1) == pytest.approx(2.0 * (1 - jitter))


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"first_s": 2.0, "max_s": 1.0}, {"jitter": 1.0}]
)
def test_retry_refuses_impossible_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Retry(**kwargs)  # type: ignore[arg-type]


def test_retry_schedules_or_raises_on() -> None:
    sched = FakeScheduler()
    r = Retry(attempts=2, first_s=1.0, jitter=0.0)

    def fail(c: Context) -> None:
        raise Flaky("no")

    handler = r(fail)
    handler(ctx(attempt=1, scheduler=sched))
    assert sched.retried == [(1, 1.0, "Flaky")]
    with pytest.raises(Flaky):
        handler(ctx(attempt=2, scheduler=sched))  # the last attempt: raised on


def test_dead_letter_takes_what_retry_gives_up_and_lets_flow_errors_through() -> None:
    sched = FakeScheduler()

    def fail(c: Context) -> None:
        raise Flaky("always")

    chain = compose(fail, [DeadLetter(), Retry(attempts=2, jitter=0.0)])
    chain(ctx(attempt=1, scheduler=sched))
    chain(ctx(attempt=2, scheduler=sched))
    assert sched.retried == [(1, 1.0, "Flaky")]
    assert sched.dead == [(2, "Flaky")]

    def unreachable(c: Context) -> None:
        raise FlowError("retry topic unreachable")

    with pytest.raises(FlowError):
        DeadLetter()(unreachable)(ctx(scheduler=sched))
    assert sched.dead == [(2, "Flaky")], "a flow error was dead-lettered"


def test_a_payload_that_cannot_be_decoded_is_dead_lettered_at_once() -> None:
    sched = FakeScheduler()
    seen: list[Any] = []
    chain = compose(lambda c: seen.append(c.value), [DeadLetter(), Retry(attempts=5)])
    import json

    chain(ctx(Message(b"{not json"), scheduler=sched, decode=json.loads))
    chain(ctx(Message(b'{"ok": 1}'), scheduler=sched, decode=json.loads))
    assert sched.retried == [] and sched.dead == [(1, "DecodeError")]
    assert seen == [{"ok": 1}]


# -- timeout -------------------------------------------------------------------------------


def test_timeout_fails_a_slow_plain_handler_and_passes_a_fast_one() -> None:
    limited = timeout(0.2)
    began = time.monotonic()
    with pytest.raises(HandlerTimeout):
        limited(lambda c: time.sleep(2))(ctx())
    assert time.monotonic() - began < 1.0
    done: list[int] = []
    limited(lambda c: done.append(1))(ctx())
    assert done == [1]
    with pytest.raises(Flaky):
        limited(lambda c: (_ for _ in ()).throw(Flaky("x")))(ctx())


def test_timeout_cancels_an_async_handler() -> None:
    loop = EventLoopThread()
    cancelled: list[bool] = []

    async def slow(c: Context) -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    try:
        with pytest.raises(HandlerTimeout):
            timeout(0.2)(as_handler(slow, True, loop))(ctx())
        deadline = time.monotonic() + 2
        while not cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cancelled == [True], "the coroutine ran on after its deadline"
    finally:
        loop.close()


def test_async_handlers_run_on_the_runtime_loop() -> None:
    loop = EventLoopThread()
    got: list[bytes] = []

    async def handle(c: Context) -> None:
        await asyncio.sleep(0.01)
        got.append(c.message.payload)

    try:
        as_handler(handle, True, loop)(ctx(Message(b"hello")))
    finally:
        loop.close()
    assert got == [b"hello"]


# -- correlation, idempotent, metrics ---------------------------------------------------------


def test_correlation_id_is_propagated_to_emitted_messages() -> None:
    emitted: list[tuple[str, Message]] = []

    def emit(topic: str, messages: Sequence[Message]) -> None:
        emitted.extend((topic, m) for m in messages)

    handler = correlation(lambda c: c.publish("invoices", b"inv", key="k"))
    first = Message(b"a")
    handler(ctx(first, emit=emit))
    chained = Message(b"b", headers={"correlation-id": "trace-7"})
    handler(ctx(chained, emit=emit))
    (t1, m1), (t2, m2) = emitted
    assert t1 == t2 == "invoices" and m1.key == "k"
    assert m1.headers["correlation-id"] == first.id and m1.headers["causation-id"] == first.id
    assert m2.headers["correlation-id"] == "trace-7" and m2.headers["causation-id"] == chained.id


class FakeClaims:
    """IdempotentConsumer's ``handle`` with an in-memory claim table and transaction."""

    def __init__(self) -> None:
        self.applied: set[str] = set()
        self._dropped: set[str] = set()

    def handle(self, messages: Sequence[Message], effect: Any) -> list[Message]:
        fresh = [m for m in messages if m.id not in self.applied]
        self._dropped = set()
        if fresh:
            effect("conn", fresh)  # raises: nothing claimed (rolled back)
        self.applied |= {m.id for m in fresh} - self._dropped
        return fresh

    def unclaim(self, conn: Any, ids: Sequence[str]) -> None:
        self._dropped |= set(ids)


def test_idempotent_applies_each_id_once_and_a_failure_claims_nothing() -> None:
    rec, claims = Recorder(), FakeClaims()
    applied: list[tuple[str, Any]] = []
    fail = [True]

    def effect(c: Context) -> None:
        if fail[0]:
            raise Flaky("db")
        applied.extend((m.id, c.db) for m in c.messages)

    handler = idempotent(claims)(effect)
    a, b = Message(b"a"), Message(b"b")
    with pytest.raises(Flaky):
        handler(ctx(a, observer=rec))
    fail[0] = False
    handler(ctx(a, observer=rec))
    handler(ctx(a, b, observer=rec))
    assert applied == [(a.id, "conn"), (b.id, "conn")]
    assert rec.events == [("dedup_skipped", "h", 1)]


def test_metrics_reports_each_call() -> None:
    rec = Recorder()
    measured = metrics(rec)
    measured(lambda c: None)(ctx())
    with pytest.raises(Flaky):
        measured(lambda c: (_ for _ in ()).throw(Flaky("x")))(ctx(Message(b"1"), Message(b"2")))
    assert rec.events == [
        ("received", "h", 1),
        ("processed", "h", 1),
        ("received", "h", 2),
        ("failed", "h", 2, "Flaky"),
    ]


def test_a_batch_failure_retries_and_dead_letters_only_its_failed_messages() -> None:
    good, bad = Message(b"good"), Message(b"bad")
    sched, rec = FakeScheduler(), Recorder()

    def handler(c: Context) -> None:
        raise BatchFailure([bad], Flaky("bad payload"))

    chain = compose(handler, [DeadLetter(), Retry(attempts=2, jitter=0), metrics(rec)])
    chain(ctx(good, bad, scheduler=sched, observer=rec, deliveries=[1, 3]))
    chain(ctx(good, bad, attempt=2, scheduler=sched, observer=rec))
    assert sched.ids == [[bad.id], [bad.id]]  # retried, then dead-lettered, alone
    assert sched.retried == [(1, 1.0, "Flaky")] and sched.dead == [(2, "Flaky")]
    assert ("processed", "h", 1) in rec.events and ("failed", "h", 1, "Flaky") in rec.events
    assert ("dead_lettered", "h", 1) in rec.events


def test_a_batch_failure_commits_the_others_and_drops_the_failed_claims() -> None:
    claims = FakeClaims()
    good, bad = Message(b"good"), Message(b"bad")
    applied: list[str] = []
    fail = [True]

    def effect(c: Context) -> None:
        applied.extend(m.id for m in c.messages if m is good or not fail[0])
        if fail[0]:
            raise BatchFailure([bad], Flaky("bad"))

    handler = idempotent(claims)(effect)
    with pytest.raises(BatchFailure):
        handler(ctx(good, bad))
    assert claims.applied == {good.id}
    fail[0] = False
    handler(ctx(good, bad))  # the good one is skipped, the bad one applies now
    assert applied == [good.id, bad.id]


def test_with_messages_keeps_the_delivery_counts_of_those_messages() -> None:
    a, b = Message(b"a"), Message(b"b")
    c = ctx(a, b, deliveries=[1, 4])
    assert c.with_messages([b]).deliveries == [4]
    assert ctx(a, b).with_messages([b]).deliveries == ()
