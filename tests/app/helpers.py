"""Helpers for the App runtime's tests: a runtime on a transport, reading a topic back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from msglab.app import App, Runtime
from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.message import Message
from msglab.ports import Transport
from msglab.profiles import DeliveryProfile


def connector(config: ClientConfig) -> Callable[[str, DeliveryProfile], Transport]:
    def connect(name: str, profile: DeliveryProfile) -> Transport:
        return open_transport(name, config.with_profile(profile))

    return connect


@contextmanager
def running(app: App, config: ClientConfig, grace_s: float = 20.0) -> Iterator[Runtime]:
    runtime = Runtime(app, connector(config))
    runtime.start()
    try:
        yield runtime
    finally:
        assert runtime.stop(grace_s), "the runtime did not stop within its grace"


def wait_until(check: Callable[[], bool], timeout_s: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)


class Reader:
    """Reads ``topic`` as ``group`` in a thread, acking everything, until stopped."""

    def __init__(self, transport: Transport, topic: str, group: str = "test-reader") -> None:
        self.messages: list[Message] = []
        self._sub = transport.subscriber(group)
        self._deliveries = self._sub.subscribe(topic)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for d in self._deliveries:
            self.messages.append(d.message)
            d.ack()

    def wait(self, count: int, timeout_s: float = 30.0) -> list[Message]:
        wait_until(lambda: len(self.messages) >= count, timeout_s, f"{count} messages")
        return list(self.messages)

    def stop(self) -> None:
        self._sub.close()
        self._thread.join(10)


class Recorder:
    """An Observer recording every event as a tuple."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def received(self, topic: str, group: str, handler: str, count: int) -> None:
        self.events.append(("received", handler, count))

    def processed(self, topic: str, group: str, handler: str, count: int, seconds: float) -> None:
        self.events.append(("processed", handler, count))

    def failed(
        self, topic: str, group: str, handler: str, count: int, seconds: float, error: str
    ) -> None:
        self.events.append(("failed", handler, count, error))

    def retried(self, topic: str, group: str, handler: str, count: int, attempt: int) -> None:
        self.events.append(("retried", handler, count, attempt))

    def dead_lettered(self, topic: str, group: str, handler: str, count: int) -> None:
        self.events.append(("dead_lettered", handler, count))

    def dedup_skipped(self, topic: str, group: str, handler: str, count: int) -> None:
        self.events.append(("dedup_skipped", handler, count))

    def kinds(self) -> list[object]:
        return [e[0] for e in self.events]
