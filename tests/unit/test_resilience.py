"""The circuit breaker and the bulkhead, on a fake clock and real threads."""

from __future__ import annotations

import threading
import time

import pytest

from msglab.resilience import BreakerOpen, Bulkhead, CircuitBreaker, OverCapacity


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fail() -> None:
    raise TimeoutError("dependency timed out")


def test_the_breaker_opens_fails_fast_tries_once_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, reset_s=10.0, failures=(TimeoutError,), clock=clock)
    for _ in range(2):
        with pytest.raises(TimeoutError):
            breaker.call(fail)
    assert breaker.state == "closed"
    assert breaker.call(lambda: 1) == 1  # a success resets the count
    for _ in range(3):
        with pytest.raises(TimeoutError):
            breaker.call(fail)
    assert breaker.state == "open"
    called = []
    with pytest.raises(BreakerOpen):
        breaker.call(lambda: called.append(1))
    assert not called  # refused without being tried
    clock.now = 10.0
    assert breaker.state == "half-open"
    with pytest.raises(TimeoutError):
        breaker.call(fail)  # the trial failed: open again, for another reset_s
    assert breaker.state == "open"
    clock.now = 20.0
    assert breaker.call(lambda: 2) == 2
    assert [s for _, s in breaker.transitions] == [
        "open",
        "half-open",
        "open",
        "half-open",
        "closed",
    ]


def test_half_open_lets_one_trial_through_at_a_time() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, reset_s=1.0, failures=(TimeoutError,), clock=clock)
    with pytest.raises(TimeoutError):
        breaker.call(fail)
    clock.now = 1.0
    inside, release = threading.Event(), threading.Event()

    def slow_trial() -> None:
        inside.set()
        release.wait(5)

    trial = threading.Thread(target=breaker.call, args=(slow_trial,))
    trial.start()
    inside.wait(5)
    with pytest.raises(BreakerOpen, match="trial"):
        breaker.call(lambda: None)
    release.set()
    trial.join(5)
    assert breaker.state == "closed"


def test_errors_that_are_not_failures_pass_through_uncounted() -> None:
    breaker = CircuitBreaker(threshold=1, failures=(TimeoutError,))
    with pytest.raises(ValueError):
        breaker.call(lambda: int("x"))
    assert breaker.state == "closed"


def test_the_bulkhead_refuses_over_capacity_and_never_exceeds_its_limit() -> None:
    bulkhead = Bulkhead(limit=3)
    refused = []
    release = threading.Event()  # the calls inside hold their slots until every caller tried

    def call() -> None:
        try:
            bulkhead.call(lambda: release.wait(5))
        except OverCapacity as exc:
            refused.append(exc)

    threads = [threading.Thread(target=call) for _ in range(10)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(refused) + bulkhead.in_use < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for t in threads:
        t.join()
    assert bulkhead.peak == 3 and bulkhead.in_use == 0
    assert len(refused) == bulkhead.refused == 7
    assert refused[0].http_status == 503
    assert bulkhead.call(lambda: "free again") == "free again"


def test_a_bulkhead_with_a_wait_admits_a_caller_when_a_slot_frees() -> None:
    bulkhead = Bulkhead(limit=1, wait_s=2.0)
    t = threading.Thread(target=bulkhead.call, args=(lambda: time.sleep(0.2),))
    t.start()
    time.sleep(0.05)
    assert bulkhead.call(lambda: "waited") == "waited"
    t.join()
    assert bulkhead.refused == 0
