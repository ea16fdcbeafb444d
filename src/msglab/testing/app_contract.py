"""The App runtime's part of the transport contract (``TransportContract`` inherits it): the
same non-blocking retry and dead letters on every transport that stores messages.

A poison message reaches ``<topic>.dlq`` with its reason after its attempts while the
messages behind it (same key: same Kafka partition, same queue) are handled at once; a runtime
stopped while a retry waits leaves the entry to the next one, which goes on counting from the
attempt it carries.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from msglab.app import App, Context, DeadLetter, DeadLetterRecord, Retry, Runtime
from msglab.app.dlq import DeadLetterBox
from msglab.app.observer import NoObserver
from msglab.app.records import dlq_topic, retry_group, retry_topic
from msglab.app.runner import DLQ_GROUP
from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.errors import MsglabError, UsageError
from msglab.lag import total as lag_total
from msglab.message import Message
from msglab.ports import LagReader, TopicAdmin, Transport
from msglab.profiles import DeliveryProfile

APP_TIMEOUT_S = 90.0
GROUP = "app-g"


class Poisoned(Exception):
    pass


class _DeadLettered(NoObserver):
    def __init__(self) -> None:
        self.count = 0

    def dead_lettered(self, topic: str, group: str, handler: str, count: int) -> None:
        self.count += count


class _Reader:
    """Reads a topic as a group in a thread, acking all."""

    def __init__(self, transport: Transport, topic: str, group: str) -> None:
        self.messages: list[Message] = []
        self._sub = transport.subscriber(group)
        deliveries = self._sub.subscribe(topic)

        def run() -> None:
            for d in deliveries:
                self.messages.append(d.message)
                d.ack()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def wait(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        self._sub.close()
        self._thread.join(15)


class AppContract:
    transport_name: ClassVar[str]
    features: ClassVar[Any]  # contract.Features

    def _app_transport(self, config: ClientConfig) -> Transport:
        if not self.features.persistent:
            pytest.skip("retry and dead letters need a transport that stores messages")
        return open_transport(self.transport_name, config)

    def _runtime(self, app: App, config: ClientConfig) -> Runtime:
        def connect(name: str, profile: DeliveryProfile) -> Transport:
            return open_transport(name, config.with_profile(profile))

        runtime = Runtime(app, connect)
        runtime.start()
        assert runtime.wait_consuming(APP_TIMEOUT_S), "the runtime did not subscribe"
        return runtime

    @pytest.fixture
    def app_cleanup(self, config: ClientConfig, topic: str) -> Iterator[None]:
        yield
        transport = open_transport(self.transport_name, config)
        if isinstance(transport, TopicAdmin):
            for t, groups in (
                (topic, [GROUP]),
                (retry_topic(topic), [retry_group(GROUP)]),
                (dlq_topic(topic), [DLQ_GROUP]),
            ):
                with contextlib.suppress(MsglabError):
                    transport.delete_topic(t, groups)

    def test_app_poison_message_is_dead_lettered_while_later_messages_flow(
        self, config: ClientConfig, topic: str, app_cleanup: None
    ) -> None:
        transport = self._app_transport(config)
        app = App("contract", middleware=[DeadLetter(), Retry(attempts=3, first_s=1.0, jitter=0)])
        tried: list[tuple[int, float]] = []
        handled: dict[str, float] = {}

        @app.consumer(topic, transport=self.transport_name, group=GROUP)
        def handle(ctx: Context) -> None:
            if ctx.message.payload == b"poison":
                tried.append((ctx.attempt, time.monotonic()))
                raise Poisoned(f"cannot handle {ctx.message.id}")
            handled[ctx.message.id] = time.monotonic()

        poison = Message(b"poison", key="k1", headers={"trace": "t-1"})
        good = [Message(f"good-{i}".encode(), key="k1") for i in range(20)]
        dlq = _Reader(transport, dlq_topic(topic), DLQ_GROUP)
        runtime = self._runtime(app, config)
        try:
            pub = transport.publisher()
            pub.publish(topic, [poison, *good])
            pub.close()
            assert dlq.wait(1, APP_TIMEOUT_S), f"nothing dead-lettered; attempts: {tried}"
            time.sleep(1.0)
        finally:
            assert runtime.stop(30), "the runtime did not stop"
            dlq.stop()
        assert handled.keys() == {m.id for m in good}, "messages behind the poison were lost"
        assert [a for a, _ in tried] == [1, 2, 3]
        assert max(handled.values()) < tried[1][1], "the messages behind waited for the retry"
        assert tried[1][1] - tried[0][1] >= 0.9 and tried[2][1] - tried[1][1] >= 1.9
        assert len(dlq.messages) == 1, f"{len(dlq.messages)} dead letters for one poison"
        record = DeadLetterRecord.parse(dlq.messages[0])
        assert record is not None, "the dead letter lacks its msglab- headers"
        assert (record.message.payload, record.message.key, record.message.id) == (
            poison.payload,
            poison.key,
            poison.id,
        )
        assert dict(record.message.headers) == dict(poison.headers)
        f = record.failure
        assert (f.origin, f.group, f.handler, f.attempt) == (topic, GROUP, "handle", 3)
        assert f.error_type == "Poisoned" and poison.id in f.error
        assert f.first_failure < f.last_failure

    def test_app_concurrency_keeps_each_keys_order_and_acks_every_message(
        self, config: ClientConfig, topic: str, app_cleanup: None
    ) -> None:
        """Four handler threads: each key's messages run in the order published, two keys run
        at once, and once stopped the group has nothing left (acks went in order)."""
        transport = self._app_transport(config)
        app = App("contract", middleware=[])
        ran: dict[str | None, list[str]] = defaultdict(list)
        running, most = [0], [0]
        lock = threading.Lock()

        @app.consumer(topic, transport=self.transport_name, group=GROUP, concurrency=4)
        def handle(ctx: Context) -> None:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(random.uniform(0, 0.004))
            with lock:
                running[0] -= 1
                ran[ctx.message.key].append(ctx.message.id)

        sent = [Message(f"m{i}".encode(), key=f"k{i % 6}") for i in range(240)]
        runtime = self._runtime(app, config)
        try:
            pub = transport.publisher()
            pub.publish(topic, sent)
            pub.close()
            deadline = time.monotonic() + APP_TIMEOUT_S
            while sum(map(len, ran.values())) < len(sent) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            assert runtime.stop(30), "the runtime did not stop"
        for key in {m.key for m in sent}:
            expected = [m.id for m in sent if m.key == key]
            assert ran[key][: len(expected)] == expected, f"{key}: out of order or missing"
        assert most[0] > 1, "the handler never ran on two threads at once"
        if isinstance(transport, LagReader):
            left = lag_total(transport.lag(topic, GROUP))
            assert left == 0, f"{left} message(s) not acked after the stop"

    def test_app_retry_count_survives_a_restarted_runtime(
        self, config: ClientConfig, topic: str, app_cleanup: None
    ) -> None:
        transport = self._app_transport(config)
        attempts: list[int] = []

        def build() -> App:
            retry = Retry(attempts=4, first_s=1.0, max_s=4.0, jitter=0)
            app = App("contract", middleware=[DeadLetter(), retry])

            @app.consumer(topic, transport=self.transport_name, group=GROUP)
            def handle(ctx: Context) -> None:
                attempts.append(ctx.attempt)
                raise Poisoned("always")

            return app

        dlq = _Reader(transport, dlq_topic(topic), DLQ_GROUP)
        try:
            first = self._runtime(build(), config)
            try:
                pub = transport.publisher()
                pub.publish(topic, [Message(b"poison", key="k")])
                pub.close()
                deadline = time.monotonic() + APP_TIMEOUT_S
                while attempts[-1:] != [2] and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                assert first.stop(30)
            assert attempts == [1, 2], f"attempts before the restart: {attempts}"
            second = self._runtime(build(), config)  # attempt 3 was due 2 s after attempt 2
            try:
                assert dlq.wait(1, APP_TIMEOUT_S), f"nothing dead-lettered; attempts {attempts}"
            finally:
                assert second.stop(30)
        finally:
            dlq.stop()
        # at-least-once: an attempt may run twice, but the count never starts again
        assert attempts == sorted(attempts) and set(attempts) == {1, 2, 3, 4}, (
            f"the attempt count did not survive the restart: {attempts}"
        )
        record = DeadLetterRecord.parse(dlq.messages[0])
        assert record is not None and record.failure.attempt == 4

    def test_app_dlq_lists_without_losing_and_replay_applies_once(
        self, config: ClientConfig, topic: str, app_cleanup: None
    ) -> None:
        """``msglab dlq``'s library: listing twice shows the same dead letters; replaying one
        runs its handler once more and removes it; an id not there is refused; purge empties."""
        transport = self._app_transport(config)
        seen = _DeadLettered()
        app = App("contract", middleware=[DeadLetter(), Retry(attempts=1)], observer=seen)
        broken = [True]
        handled: list[str] = []

        @app.consumer(topic, transport=self.transport_name, group=GROUP)
        def handle(ctx: Context) -> None:
            if broken[0]:
                raise Poisoned("broken for now")
            handled.append(ctx.message.id)

        def opener(c: ClientConfig) -> Transport:
            return open_transport(self.transport_name, c)

        box = DeadLetterBox(opener, config, topic, wait_s=12, idle_s=1.0)
        first, second = Message(b"p1", key="a", headers={"h": "1"}), Message(b"p2", key="b")
        runtime = self._runtime(app, config)
        try:
            pub = transport.publisher()
            pub.publish(topic, [first, second])
            pub.close()
            deadline = time.monotonic() + APP_TIMEOUT_S
            while seen.count < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert seen.count == 2, "the two poison messages were not dead-lettered"
            listed = box.list()
            assert sorted(e.id for e in listed) == sorted([first.id, second.id])
            assert sorted(e.id for e in box.list()) == sorted([first.id, second.id]), (
                "listing lost dead letters"
            )
            with pytest.raises(UsageError, match="no dead letter with id nope"):
                box.replay(["nope", first.id])
            broken[0] = False
            changed = box.replay([first.id])
            assert (changed.done, changed.kept) == ([first.id], 1)
            deadline = time.monotonic() + APP_TIMEOUT_S
            while not handled and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
            assert handled == [first.id], f"the replayed message ran {len(handled)} times"
            (left,) = box.list()
            assert left.id == second.id and left.record is not None
            assert left.record.failure.error_type == "Poisoned"
            assert box.purge().done == [second.id]
            # nothing left: a box that waits 5 s for a first entry, not 12 (x 6 transports in CI)
            assert DeadLetterBox(opener, config, topic, wait_s=5, idle_s=1.0).list() == []
        finally:
            assert runtime.stop(30)

    def test_app_attempt_count_survives_a_killed_worker(
        self, config: ClientConfig, topic: str, app_cleanup: None, tmp_path: Path
    ) -> None:
        """A worker process killed (SIGKILL) while a retry waits: the next one runs the
        attempts left, counting on from the entry's headers, then dead-letters."""
        transport = self._app_transport(config)
        if not self.features.across_processes:
            pytest.skip("its messages live in one process")
        from msglab.testing.contract import _config_dict

        out = tmp_path / "attempts"

        argv = [sys.executable, "-m", "msglab.testing.app_worker", self.transport_name]

        def spawn() -> subprocess.Popen[bytes]:
            proc = subprocess.Popen(
                [*argv, topic, GROUP, str(out)],
                stdin=subprocess.PIPE,  # the config, with the broker's password: not in argv
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            assert proc.stdin is not None
            with proc.stdin:
                proc.stdin.write(json.dumps(_config_dict(config)).encode())
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert b"consuming" in line, f"worker did not subscribe: {line!r}"
            return proc

        def attempts() -> list[int]:
            return [int(n) for n in out.read_text().split()] if out.exists() else []

        dlq = _Reader(transport, dlq_topic(topic), DLQ_GROUP)
        first = spawn()
        try:
            pub = transport.publisher()
            pub.publish(topic, [Message(b"poison", key="k")])
            pub.close()
            deadline = time.monotonic() + APP_TIMEOUT_S
            while attempts() != [1, 2] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert attempts() == [1, 2], f"attempts before the kill: {attempts()}"
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        second = spawn()  # attempt 3 is due 2 s after attempt 2
        try:
            assert dlq.wait(1, APP_TIMEOUT_S), f"nothing dead-lettered; attempts {attempts()}"
        finally:
            second.send_signal(signal.SIGKILL)
            second.wait()
            dlq.stop()
        seen = attempts()
        # at-least-once: an attempt may run twice, but the count never starts again
        assert seen == sorted(seen) and set(seen) == {1, 2, 3, 4}, f"attempts: {seen}"
        record = DeadLetterRecord.parse(dlq.messages[0])
        assert record is not None and record.failure.attempt == 4
