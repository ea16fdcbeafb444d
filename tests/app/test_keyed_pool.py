"""KeyedPool: a key's messages run in order on one thread, keys run side by side, deliveries
are settled in the order they were handed in, at most ``window`` at once."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict

import pytest

from msglab.app.keyed_pool import KeyedPool
from msglab.message import Delivery, Message


class Settled:
    """What the pool settled, in order: (message id, acked)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, bool]] = []

    def __call__(self, d: Delivery, ok: bool, _requeue: bool) -> None:
        self.log.append((d.message.id, ok))


def deliveries(keys: list[str | None], settled: Settled) -> list[Delivery]:
    return [
        Delivery(Message(f"{i}".encode(), key=k), "t", 1, False, settled)
        for i, k in enumerate(keys)
    ]


def test_each_key_keeps_its_order_while_keys_run_side_by_side() -> None:
    settled = Settled()
    keys: list[str | None] = [f"k{i % 5}" for i in range(200)]
    items = deliveries(keys, settled)
    ran: dict[str | None, list[str]] = defaultdict(list)
    running, most = [0], [0]
    lock = threading.Lock()

    def run(d: Delivery) -> bool:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(random.uniform(0, 0.003))
        with lock:
            running[0] -= 1
            ran[d.message.key].append(d.message.id)
        return True

    pool = KeyedPool(4, run)
    for d in items:
        pool.submit(d)
    pool.finish()
    for key in set(keys):
        assert ran[key] == [d.message.id for d in items if d.message.key == key], key
    assert most[0] > 1, "no two handlers ever ran at once"
    assert settled.log == [(d.message.id, True) for d in items]  # all acked, in order


def test_a_slow_delivery_holds_the_acks_behind_it_not_their_handlers() -> None:
    settled = Settled()
    # crc32 % 4: slow 1, d 0, e 2, a 3 (four threads: the other three never wait for slow)
    first, *rest = deliveries(["slow", "d", "e", "a"], settled)
    release = threading.Event()
    ran: list[str | None] = []

    def run(d: Delivery) -> bool:
        if d.message.key == "slow":
            release.wait(5)
        ran.append(d.message.key)
        return True

    pool = KeyedPool(4, run)
    for d in (first, *rest):
        pool.submit(d)
    deadline = time.monotonic() + 5
    while len(ran) < 3:
        assert time.monotonic() < deadline, ran
        time.sleep(0.01)
    assert pool.settle_done() == 0 and settled.log == []  # done, but behind the slow one
    release.set()
    pool.finish()
    assert [mid for mid, _ in settled.log] == [d.message.id for d in (first, *rest)]


def test_a_failed_delivery_is_nacked_in_its_place() -> None:
    settled = Settled()
    items = deliveries(["a", "b", "a"], settled)
    pool = KeyedPool(2, lambda d: d is not items[1])
    for d in items:
        pool.submit(d)
    pool.finish()
    assert settled.log == [(d.message.id, d is not items[1]) for d in items]


def test_submit_waits_while_the_window_is_full() -> None:
    settled = Settled()
    items = deliveries(["a", "b", "c"], settled)
    release = threading.Event()
    pool = KeyedPool(2, lambda d: release.wait(5), window=2)
    pool.submit(items[0])
    pool.submit(items[1])
    third = threading.Thread(target=pool.submit, args=(items[2],))
    third.start()
    third.join(0.5)
    assert third.is_alive() and pool.in_flight == 2, "a third delivery entered a full window"
    release.set()
    third.join(5)
    assert not third.is_alive()
    pool.finish()
    assert [mid for mid, _ in settled.log] == [d.message.id for d in items]


def test_finish_without_settling_leaves_every_delivery_to_the_broker() -> None:
    settled = Settled()
    release = threading.Event()
    pool = KeyedPool(2, lambda d: release.wait(5))
    for d in deliveries(["a", None, None], settled):
        pool.submit(d)
    release.set()
    pool.finish(settle=False)
    assert settled.log == [] and pool.in_flight == 0


def test_one_thread_is_not_a_pool() -> None:
    with pytest.raises(ValueError):
        KeyedPool(1, lambda d: True)
