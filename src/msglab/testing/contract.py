"""The contract every transport must keep, run against the real broker.

A transport's test file subclasses ``TransportContract``, names the transport, declares its
``Features`` and provides a ``config`` fixture; it contains no test logic of its own (the
Watermill universal-suite pattern). Beyond Watermill, the suite kills brokers and consumers,
and counts duplicate deliveries instead of hiding them: every test records what it saw in the
``contract_report`` (printed at the end of the run and written to
``$MSGLAB_HOME/contract-report.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.errors import MsglabError, PublishError, TransportError, UsageError
from msglab.lag import Lag, total
from msglab.message import Delivery, Message
from msglab.ports import LagReader, TopicAdmin, Transport
from msglab.profiles import DeliveryProfile
from msglab.testing.app_contract import AppContract


@dataclass(frozen=True)
class Features:
    """What a transport promises; the suite runs the tests its features call for.

    persistent: messages survive a broker restart and wait for absent consumers.
    consumer_groups: members of one group share the messages (else each gets all).
    nack_redelivers: ``nack(requeue=True)`` delivers the message again.
    redelivered_flag: the broker says when a delivery is a redelivery.
    per_key_order: messages with one key arrive in publish order.
    service: the ``msglab infra`` service behind it (killed by the broker-kill test).
    at_least_once: the transport accepts the at-least-once profile.
    across_processes: another process of this machine sees the same messages (not so in
        memory).
    """

    persistent: bool
    consumer_groups: bool
    nack_redelivers: bool
    redelivered_flag: bool
    per_key_order: bool
    service: str | None
    at_least_once: bool = True
    across_processes: bool = True


@dataclass
class Seen:
    """What one test observed: deliveries per message id and duplicate deliveries."""

    transport: str
    test: str
    published: int = 0
    delivered: int = 0
    duplicates: int = 0
    redelivered_flagged: int = 0


@dataclass
class ContractReport:
    rows: list[Seen] = field(default_factory=list)

    def totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for row in self.rows:
            t = out.setdefault(row.transport, {"published": 0, "delivered": 0, "duplicates": 0})
            t["published"] += row.published
            t["delivered"] += row.delivered
            t["duplicates"] += row.duplicates
        return out

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"totals": self.totals(), "tests": [asdict(r) for r in self.rows]}
        path.write_text(json.dumps(data, indent=2) + "\n")


class Collector:
    """Runs a subscriber in a thread, records every delivery (and when it arrived), settles
    each with ``decide``."""

    def __init__(
        self,
        transport: Transport,
        topic: str,
        group: str,
        decide: Callable[[Delivery], bool] = lambda d: True,
    ) -> None:
        self.transport, self.topic, self.group = transport, topic, group
        self.sub = transport.subscriber(group)
        self.deliveries: list[Delivery] = []
        self.arrived: list[float] = []  # time.monotonic() of each delivery, in order
        self.ids: dict[str, int] = {}
        self._decide = decide
        self._changed = threading.Condition()
        self._iterator = self.sub.subscribe(topic)  # the subscription exists from here on
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for delivery in self._iterator:
                if self._decide(delivery):
                    delivery.ack()
                else:
                    delivery.nack(requeue=True)
                with self._changed:
                    self.deliveries.append(delivery)
                    self.arrived.append(time.monotonic())
                    mid = delivery.message.id
                    self.ids[mid] = self.ids.get(mid, 0) + 1
                    self._changed.notify_all()
        except BaseException as exc:  # surfaced by wait_for
            self.error = exc
            with self._changed:
                self._changed.notify_all()

    def wait_for(self, ids: set[str], timeout_s: float = 30.0) -> bool:
        """Wait until every id in ``ids`` was delivered; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not ids <= self.ids.keys():
                if self.error is not None:
                    raise self.error
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))
        return True

    def quiet(self, seconds: float) -> None:
        """Let late (duplicate) deliveries arrive."""
        time.sleep(seconds)

    def stop(self) -> None:
        self.sub.close()
        self._thread.join(15)

    def duplicates(self) -> int:
        return sum(n - 1 for n in self.ids.values())


def make_messages(n: int, keys: int = 4, size: int = 32, tag: str = "") -> list[Message]:
    return [
        Message(
            payload=(f"{tag}{i}:".encode() + b"x" * size)[: max(size, 8)],
            key=f"k{i % keys}",
            headers={"seq": str(i), "tag": tag},
        )
        for i in range(n)
    ]


def publish_with_retries(
    pub: Any, topic: str, messages: list[Message], tries: int = 30
) -> set[str]:
    """Publish, retrying what was not confirmed (as an at-least-once producer does);
    the ids confirmed."""
    confirmed: set[str] = set()
    pending = messages
    for _ in range(tries):
        try:
            pub.publish(topic, pending)
            confirmed |= {m.id for m in pending}
            return confirmed
        except (PublishError, TransportError) as exc:
            left = set(getattr(exc, "failed", ())) | set(getattr(exc, "unknown", ()))
            if not left:  # a connection-level error: nothing was confirmed
                left = {m.id for m in pending}
            confirmed |= {m.id for m in pending if m.id not in left}
            pending = [m for m in pending if m.id in left]
            time.sleep(0.5)
    raise AssertionError(f"{len(pending)} messages still unconfirmed after {tries} tries")


class TransportContract(AppContract):
    """Subclass with ``transport_name``, ``features`` and a ``config`` fixture. The App
    runtime's retry and dead letters are part of it (``AppContract``)."""

    transport_name: ClassVar[str]
    features: ClassVar[Features]

    # -- helpers ---------------------------------------------------------------------------

    @pytest.fixture
    def transport(self, config: ClientConfig) -> Transport:
        return open_transport(self.transport_name, config)

    @pytest.fixture
    def seen(self, request: pytest.FixtureRequest, contract_report: ContractReport) -> Seen:
        row = Seen(self.transport_name, request.node.name)
        contract_report.rows.append(row)
        return row

    @pytest.fixture
    def topic(self, unique_name: str) -> str:
        return unique_name

    @pytest.fixture
    def collectors(self) -> Iterator[list[Collector]]:
        """The test's collectors, stopped after it; then their topics and groups' queues are
        deleted (a RabbitMQ that keeps every test's quorum queues restarts ever slower)."""
        made: list[Collector] = []
        yield made
        for c in made:
            c.stop()
        topics: dict[str, tuple[Transport, set[str]]] = {}
        for c in made:
            topics.setdefault(c.topic, (c.transport, set()))[1].add(c.group)
        for topic, (transport, groups) in topics.items():
            if isinstance(transport, TopicAdmin):
                with contextlib.suppress(MsglabError):
                    transport.delete_topic(topic, sorted(groups))

    def _collect(
        self,
        made: list[Collector],
        transport: Transport,
        topic: str,
        group: str,
        decide: Callable[[Delivery], bool] = lambda d: True,
    ) -> Collector:
        c = Collector(transport, topic, group, decide)
        made.append(c)
        return c

    def _record(self, seen: Seen, published: int, *collectors: Collector) -> None:
        seen.published += published
        for c in collectors:
            seen.delivered += len(c.deliveries)
            seen.duplicates += c.duplicates()
            seen.redelivered_flagged += sum(d.redelivered for d in c.deliveries)

    # -- the contract ----------------------------------------------------------------------

    # the profiles a transport sees: effectively-once is at-least-once to it (the consumer's
    # dedup does the rest)
    @pytest.mark.parametrize(
        "profile", [DeliveryProfile.AT_MOST_ONCE, DeliveryProfile.AT_LEAST_ONCE]
    )
    def test_round_trip_keeps_payload_key_and_headers(
        self,
        config: ClientConfig,
        topic: str,
        collectors: list[Collector],
        seen: Seen,
        profile: DeliveryProfile,
    ) -> None:
        if profile is DeliveryProfile.AT_LEAST_ONCE and not self.features.at_least_once:
            with pytest.raises(UsageError, match="cannot promise"):
                open_transport(self.transport_name, config.with_profile(profile))
            return  # refused before anything was sent, saying why
        transport = open_transport(self.transport_name, config.with_profile(profile))
        c = self._collect(collectors, transport, topic, "g")
        sent = [
            Message(
                b"\x00binary\xff" + bytes(range(50)),
                key="user-7",
                headers={"trace": "abc", "unicode": "ü✓"},
            )
            for _ in range(3)
        ]
        with_close(transport.publisher(), lambda p: p.publish(topic, sent))
        assert c.wait_for({m.id for m in sent})
        got = {d.message.id: d.message for d in c.deliveries}
        for m in sent:
            assert got[m.id].payload == m.payload
            assert got[m.id].key == m.key
            assert dict(got[m.id].headers) == dict(m.headers)
        self._record(seen, len(sent), c)

    def test_per_key_order(
        self, transport: Transport, topic: str, collectors: list[Collector], seen: Seen
    ) -> None:
        if not self.features.per_key_order:
            pytest.skip("no per-key order declared")
        c = self._collect(collectors, transport, topic, "g")
        sent = make_messages(400, keys=4)
        with_close(transport.publisher(), lambda p: p.publish(topic, sent))
        assert c.wait_for({m.id for m in sent})
        last: dict[str, int] = {}
        first_seen: set[str] = set()
        for d in c.deliveries:
            if d.message.id in first_seen:
                continue
            first_seen.add(d.message.id)
            seq = int(d.message.headers["seq"])
            assert seq > last.get(d.message.key or "", -1), f"key {d.message.key} reordered"
            last[d.message.key or ""] = seq
        self._record(seen, len(sent), c)

    def test_nack_causes_redelivery_with_flag_and_attempt(
        self, transport: Transport, topic: str, collectors: list[Collector], seen: Seen
    ) -> None:
        nacked: set[str] = set()

        def nack_first(d: Delivery) -> bool:
            if d.message.id in nacked:
                return True
            nacked.add(d.message.id)
            return False

        c = self._collect(collectors, transport, topic, "g", nack_first)
        sent = make_messages(5)
        with_close(transport.publisher(), lambda p: p.publish(topic, sent))
        assert c.wait_for({m.id for m in sent})
        if not self.features.nack_redelivers:
            c.quiet(1.0)
            assert all(c.ids[m.id] == 1 for m in sent), "nack redelivered after all"
            self._record(seen, len(sent), c)
            return  # measured: a nacked message is gone
        deadline = time.monotonic() + 30
        while any(c.ids.get(m.id, 0) < 2 for m in sent) and time.monotonic() < deadline:
            time.sleep(0.1)
        for m in sent:
            attempts = [d for d in c.deliveries if d.message.id == m.id]
            assert len(attempts) >= 2, f"{m.id} was not redelivered after nack"
            assert attempts[0].attempt == 1 and not attempts[0].redelivered
            assert attempts[1].attempt >= 2
            if self.features.redelivered_flag:
                assert attempts[1].redelivered
        self._record(seen, len(sent), c)

    def test_close_flushes(
        self, transport: Transport, topic: str, collectors: list[Collector], seen: Seen
    ) -> None:
        c = self._collect(collectors, transport, topic, "g")
        sent = make_messages(1000)
        pub = transport.publisher()
        pub.publish(topic, sent)
        pub.close()
        pub.close()  # idempotent
        assert c.wait_for({m.id for m in sent}, 60)
        self._record(seen, len(sent), c)

    def test_two_groups_each_get_everything(
        self, transport: Transport, topic: str, collectors: list[Collector], seen: Seen
    ) -> None:
        a = self._collect(collectors, transport, topic, "group-a")
        b = self._collect(collectors, transport, topic, "group-b")
        sent = make_messages(200)
        with_close(transport.publisher(), lambda p: p.publish(topic, sent))
        ids = {m.id for m in sent}
        assert a.wait_for(ids) and b.wait_for(ids)
        self._record(seen, 2 * len(sent), a, b)

    def test_members_of_one_group_share_the_work(
        self, transport: Transport, topic: str, collectors: list[Collector], seen: Seen
    ) -> None:
        a = self._collect(collectors, transport, topic, "shared")
        b = self._collect(collectors, transport, topic, "shared")
        sent: list[Message] = []
        pub = transport.publisher()
        deadline = time.monotonic() + 60
        while not (a.ids and b.ids) and time.monotonic() < deadline:
            batch = make_messages(50, keys=16, tag=f"r{len(sent)}-")
            pub.publish(topic, batch)
            sent += batch
            time.sleep(0.2)
        pub.close()
        ids = {m.id for m in sent}
        deadline = time.monotonic() + 30
        while not ids <= (a.ids.keys() | b.ids.keys()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ids <= (a.ids.keys() | b.ids.keys()), "the group lost messages"
        if self.features.consumer_groups:
            assert a.ids and b.ids, "one member of the group got nothing"
        else:  # no groups: every subscriber gets every message
            assert a.wait_for(ids) and b.wait_for(ids)
        self._record(seen, len(sent), a, b)

    def test_restarted_subscriber_resumes_without_loss(
        self, transport: Transport, topic: str, collectors: list[Collector], seen: Seen
    ) -> None:
        first = self._collect(collectors, transport, topic, "g")
        pub = transport.publisher()
        part1 = make_messages(100, tag="a")
        pub.publish(topic, part1)
        assert first.wait_for({m.id for m in part1})
        first.stop()
        part2 = make_messages(100, tag="b")
        pub.publish(topic, part2)  # nobody in the group is listening now
        pub.close()
        second = self._collect(collectors, transport, topic, "g")
        if not self.features.persistent:
            second.quiet(1.0)
            assert not second.ids, "a non-persistent transport kept messages for nobody"
            self._record(seen, 200, first, second)
            return  # measured: everything published while nobody listened is lost
        assert second.wait_for({m.id for m in part2}), "messages sent while away were lost"
        second.quiet(0.5)
        self._record(seen, 200, first, second)
        seen.duplicates += len(first.ids.keys() & second.ids.keys())

    def test_lag_counts_what_the_group_has_not_acked(
        self, transport: Transport, topic: str, collectors: list[Collector], seen: Seen
    ) -> None:
        """Publish 100, ack 40 as group g and close: the group's lag is 60; a second member
        acks the rest: 0. A transport that stores nothing has no lag to read."""
        if not self.features.persistent:
            assert not isinstance(transport, LagReader), "it stores nothing: no lag to read"
            return
        assert isinstance(transport, LagReader), "a transport that stores messages reads lag"
        sub = transport.subscriber("g")
        deliveries = sub.subscribe(topic)  # the group (queue, stream group) exists from here
        messages = make_messages(100, tag="lag")
        with_close(transport.publisher(), lambda pub: pub.publish(topic, messages))
        assert wait_lag(transport, topic, "g", 100) == 100
        acked: set[str] = set()
        for delivery in deliveries:
            delivery.ack()
            acked.add(delivery.message.id)
            if len(acked) == 40:
                break
        sub.close()
        lags = lag_rows(transport, topic, "g", 60)
        assert total(lags) == 60, lags
        assert all(lag.backlog == lag.lag for lag in lags), "nobody holds any: all is known"
        rest = self._collect(collectors, transport, topic, "g")
        assert rest.wait_for({m.id for m in messages} - acked)
        rest.stop()
        assert wait_lag(transport, topic, "g", 0) == 0
        self._record(seen, 100, rest)
        seen.delivered += len(acked)

    def test_a_nacked_message_is_not_skipped_by_later_acks(
        self, transport: Transport, topic: str, collectors: list[Collector], seen: Seen
    ) -> None:
        if not (self.features.persistent and self.features.nack_redelivers):
            pytest.skip("needs stored messages and redelivery on nack")
        sent = make_messages(20, keys=1)
        poison = sent[3].id
        sub = transport.subscriber("g")
        deliveries = sub.subscribe(topic)
        with_close(transport.publisher(), lambda p: p.publish(topic, sent))
        guard = threading.Timer(60, sub.close)
        guard.start()
        held: Delivery | None = None
        acked: set[str] = set()
        for d in deliveries:  # hold the poison message, ack every later one first
            if d.message.id == poison:
                held = held or d
                continue
            d.ack()
            acked.add(d.message.id)
            if len(acked) == len(sent) - 1:
                break
        guard.cancel()
        assert held is not None and len(acked) == len(sent) - 1
        held.nack(requeue=True)
        sub.close()  # from the iterating thread: ends the iteration and releases now
        second = self._collect(collectors, transport, topic, "g")
        assert second.wait_for({poison}, 60), "acks of later messages skipped a nacked one"
        second.quiet(0.5)
        self._record(seen, len(sent), second)
        seen.delivered += len(acked) + 1

    def test_a_batch_settled_when_idle_stays_settled(
        self, transport: Transport, topic: str, collectors: list[Collector], seen: Seen
    ) -> None:
        """A batch consumer holds deliveries and acks them in ``on_idle``: the hook runs in
        the iterating thread once the stream went quiet, and those acks count."""
        sent = make_messages(50)
        sub = transport.subscriber("g")
        held: list[Delivery] = []
        acked: set[str] = set()
        idle_threads: set[int] = set()

        def settle_held() -> None:
            idle_threads.add(threading.get_ident())
            for d in held:
                d.ack()
                acked.add(d.message.id)
            held.clear()
            if len(acked) >= len(sent):
                sub.close()

        sub.on_idle(settle_held)
        deliveries = sub.subscribe(topic)
        with_close(transport.publisher(), lambda p: p.publish(topic, sent))
        guard = threading.Timer(60, sub.close)
        guard.start()
        for d in deliveries:
            held.append(d)
        guard.cancel()
        assert acked == {m.id for m in sent}, f"{len(sent) - len(acked)} never settled"
        assert idle_threads == {threading.get_ident()}, "on_idle ran outside the iterating thread"
        if self.features.persistent:
            second = self._collect(collectors, transport, topic, "g")
            second.quiet(1.5)
            assert not second.ids, f"{len(second.ids)} messages acked in on_idle came again"
            self._record(seen, len(sent), second)
        else:
            seen.published += len(sent)
        seen.delivered += len(acked)

    def test_batches_keep_order_and_a_nacked_batch_comes_again(
        self, transport: Transport, topic: str, collectors: list[Collector], seen: Seen
    ) -> None:
        """``batches``: every message arrives with payload, key and headers, in publish order
        per key where declared; a nacked batch comes again with attempts above 1 where nack
        redelivers; acked batches do not come back to the group."""
        sent = make_messages(300, keys=3)
        by_id = {m.id: m for m in sent}
        sub = transport.subscriber("g")
        batches = sub.batches(topic, max_messages=50)
        with_close(transport.publisher(), lambda p: p.publish(topic, sent))
        guard = threading.Timer(60, sub.close)
        guard.start()
        got: list[tuple[Message, int]] = []
        nacked: set[str] = set()
        acked: set[str] = set()
        for batch in batches:
            assert 1 <= len(batch) <= 50 and len(batch.attempts) == len(batch)
            messages = list(batch.messages)
            got += zip(messages, batch.attempts, strict=True)
            if not nacked and self.features.nack_redelivers:
                nacked = {m.id for m in messages}
                batch.nack(requeue=True)
            else:
                batch.ack()
                acked.update(m.id for m in messages)
            if acked >= by_id.keys():
                break
        guard.cancel()
        sub.close()
        ids = [m.id for m, _ in got]
        assert set(ids) == set(by_id), f"{len(by_id.keys() - set(ids))} never came in a batch"
        for m, _ in got:
            original = by_id[m.id]
            assert (m.payload, m.key, dict(m.headers)) == (
                original.payload,
                original.key,
                dict(original.headers),
            )
        if nacked:
            again = [a for m, a in got if m.id in nacked][len(nacked) :]
            assert len(again) >= len(nacked), "a nacked batch did not come again"
            assert min(again) >= 2, "a redelivered batch's attempts stayed at 1"
        if self.features.per_key_order:
            last: dict[str | None, int] = {}
            for m, attempt in got:
                if attempt == 1:  # first deliveries only
                    assert int(m.headers["seq"]) > last.get(m.key, -1), f"key {m.key} reordered"
                    last[m.key] = int(m.headers["seq"])
        if self.features.persistent:
            second = self._collect(collectors, transport, topic, "g")
            second.quiet(1.5)
            assert not second.ids, f"{len(second.ids)} messages of acked batches came again"
        seen.published += len(sent)
        seen.delivered += len(got)
        seen.duplicates += len(got) - len(by_id)

    def test_topics_are_isolated(
        self, transport: Transport, topic: str, collectors: list[Collector], seen: Seen
    ) -> None:
        c = self._collect(collectors, transport, topic, "g")
        other = f"{topic}-other"
        self._collect(collectors, transport, other, "g")
        mine, theirs = make_messages(20, tag="mine"), make_messages(20, tag="theirs")
        pub = transport.publisher()
        pub.publish(other, theirs)
        pub.publish(topic, mine)
        pub.close()
        assert c.wait_for({m.id for m in mine})
        c.quiet(0.5)
        assert not c.ids.keys() & {m.id for m in theirs}
        self._record(seen, len(mine), c)

    def test_publish_to_a_stopped_broker_fails_within_the_connect_timeout(
        self, config: ClientConfig
    ) -> None:
        if self.features.service is None:
            pytest.skip("no broker")
        dead = _dead_url(config.url)
        transport = open_transport(
            self.transport_name, replace(config, url=dead, connect_timeout_s=2.0)
        )
        began = time.monotonic()
        with pytest.raises(TransportError) as caught:
            pub = transport.publisher()
            try:
                pub.publish("anything", make_messages(3))
            finally:
                pub.close()
        elapsed = time.monotonic() - began
        assert elapsed < 2.0 + 2.0, f"took {elapsed:.1f}s for a 2s connect timeout"
        assert _host_port(dead) in str(caught.value)

    def test_broker_killed_mid_stream_loses_no_confirmed_message(
        self,
        transport: Transport,
        topic: str,
        collectors: list[Collector],
        seen: Seen,
        msglab_infra: Any,
    ) -> None:
        if not self.features.persistent or self.features.service is None:
            pytest.skip("no persistent broker to kill")
        c = self._collect(collectors, transport, topic, "g")
        time.sleep(
            1.2
        )  # RabbitMQ 3.10 quorum queues lose everything if killed < 0.5s after declare
        pub = transport.publisher()
        confirmed: set[str] = set()
        batches = [make_messages(100, tag=f"b{i}-") for i in range(30)]
        done = threading.Event()

        def produce() -> None:
            for batch in batches:
                confirmed.update(publish_with_retries(pub, topic, batch))
            done.set()

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        while len(confirmed) < 500 and producer.is_alive():
            time.sleep(0.01)
        msglab_infra.kill(self.features.service)
        time.sleep(1.0)
        msglab_infra.restart(self.features.service)
        producer.join(180)
        pub.close()
        assert done.is_set(), (
            f"the producer did not finish after the broker came back ({len(confirmed)} confirmed)"
        )
        if not c.wait_for(confirmed, 120):
            missing = confirmed - c.ids.keys()
            tags = sorted({m.headers["tag"] for b in batches for m in b if m.id in missing})
            raise AssertionError(
                f"lost {len(missing)} of {len(confirmed)} confirmed messages (batches {tags}); "
                f"collector error: {c.error!r}"
            )
        c.quiet(1.0)
        self._record(seen, len(confirmed), c)

    def test_consumer_killed_before_ack_gets_the_message_again(
        self,
        config: ClientConfig,
        transport: Transport,
        topic: str,
        collectors: list[Collector],
        seen: Seen,
        tmp_path: Path,
    ) -> None:
        if not self.features.persistent or self.features.service is None:
            pytest.skip("no persistent broker shared with another process")
        out = tmp_path / "handled"
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "msglab.testing.worker",
                self.transport_name,
                topic,
                "g",
                str(out),
            ],
            stdin=subprocess.PIPE,  # the config, with the broker's password: not in argv
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert worker.stdin is not None
        with worker.stdin:
            worker.stdin.write(json.dumps(_config_dict(config)).encode())
        try:
            assert _wait_line(worker, "subscribed", 60), "worker did not subscribe"
            sent = make_messages(1)
            with_close(transport.publisher(), lambda p: p.publish(topic, sent))
            deadline = time.monotonic() + 60
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert out.read_text().strip() == sent[0].id, "worker did not handle the message"
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        c = self._collect(collectors, transport, topic, "g")
        assert c.wait_for({sent[0].id}, 90), "the message handled but not acked was lost"
        again = c.deliveries[0]
        if self.features.redelivered_flag:
            assert again.redelivered and again.attempt >= 2
        self._record(seen, 1, c)
        seen.duplicates += 1  # handled by the killed worker, then delivered again


def lag_rows(transport: LagReader, topic: str, group: str, expect: int) -> list[Lag]:
    """The group's Lag rows once their total is ``expect`` (brokers settle acks, commits and
    requeues a moment after the client), or the last ones read after 20 s."""
    deadline = time.monotonic() + 20
    while True:
        lags = transport.lag(topic, group)
        for lag in lags:  # the parts agree with each other wherever they are known
            if None not in (lag.backlog, lag.ready, lag.unacked):
                assert lag.backlog == (lag.ready or 0) + (lag.unacked or 0), lag
        if total(lags) == expect or time.monotonic() > deadline:
            return lags
        time.sleep(0.2)


def wait_lag(transport: LagReader, topic: str, group: str, expect: int) -> int | None:
    """The group's total lag once it is ``expect``, or the last one read after 20 s."""
    return total(lag_rows(transport, topic, group, expect))


def with_close(pub: Any, action: Callable[[Any], None]) -> None:
    try:
        action(pub)
    finally:
        pub.close()


def _host_port(url: str) -> str:
    rest = url.split("://", 1)[-1].rsplit("@", 1)[-1]
    return rest.split("/", 1)[0].split(",", 1)[0]


def _dead_url(url: str) -> str:
    """``url`` with its port replaced by one nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hp = _host_port(url)
    return url.replace(hp, f"127.0.0.1:{port}", 1)


def _config_dict(config: ClientConfig) -> dict[str, Any]:
    return {
        "url": config.url,
        "profile": config.profile.value,
        "claim_idle_s": config.claim_idle_s,
        "session_timeout_s": config.session_timeout_s,
        "prefetch": config.prefetch,
    }


def _wait_line(proc: subprocess.Popen[bytes], text: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while time.monotonic() < deadline:
        chunk = proc.stdout.read()
        if chunk:
            buf += chunk
            if text.encode() in buf:
                return True
        if proc.poll() is not None:
            raise AssertionError(f"worker exited: {buf.decode(errors='replace')}")
        time.sleep(0.05)
    return False
