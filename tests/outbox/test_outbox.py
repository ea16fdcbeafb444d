"""The outbox and its relay on the real PostgreSQL and on SQLite (the in-memory transport is the
publisher: these tests are about the table and the relay, the lab's rows and tests/outbox/
test_relay_cli.py about the brokers). Several relays, wake on commit and transactions that
commit out of position order are PostgreSQL's."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from msglab.brokers import open_transport
from msglab.config import Backoff, ClientConfig
from msglab.errors import PublishError, TransportError
from msglab.message import Message
from msglab.metrics.exporter import export_relays
from msglab.outbox import OUTBOX, SHARDS, Outbox, Relay
from msglab.ports import Publisher

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(any_db: Engine) -> Engine:
    return any_db


@pytest.fixture
def topic() -> str:
    return f"outbox-{uuid.uuid4().hex[:8]}"


class Recording:
    """A publisher that records what it was given and confirms (or refuses) as told."""

    def __init__(
        self, refuse: set[str] | None = None, down: bool = False, then: Publisher | None = None
    ) -> None:
        self.published: list[Message] = []
        self.refuse = refuse or set()
        self.down = down
        self.then = then  # where confirmed messages go on

    def publish(self, topic: str, messages: Iterable[Message]) -> None:
        if self.down:
            raise TransportError("broker away")
        batch = list(messages)
        self.published += batch
        refused = [m.id for m in batch if m.id in self.refuse]
        self.refuse -= set(refused)  # refused once, confirmed the next time
        if refused:
            raise PublishError("not confirmed", failed=refused, unknown=[])
        if self.then is not None:
            self.then.publish(topic, batch)

    def close(self) -> None:
        pass


def write(db: Engine, topic: str, messages: list[Message], commit: bool = True) -> None:
    with db.connect() as conn, conn.begin() as tx:
        Outbox.add(conn, topic, messages)
        if not commit:
            tx.rollback()


def unsent(db: Engine, topic: str) -> int:
    with db.connect() as conn:
        query = select(func.count()).where(OUTBOX.c.topic == topic, OUTBOX.c.sent_at.is_(None))
        return int(conn.execute(query).scalar_one())


def messages(n: int) -> list[Message]:
    return [Message(f"m{i}".encode(), f"k{i % 2}", {"i": str(i)}) for i in range(n)]


def test_committed_messages_are_published_in_order_once(db: Engine, topic: str) -> None:
    kept, rolled_back = messages(5), messages(3)
    write(db, topic, kept)
    write(db, topic, rolled_back, commit=False)
    write(db, topic, kept[:2])  # a retried transaction stores each message once
    pub = Recording()
    with Relay(db, pub, batch_size=2, topics=[topic]) as relay:
        while relay.run_once():
            pass
    assert pub.published == kept  # payload, key, headers and id survive the table
    assert unsent(db, topic) == 0
    assert relay.stats.published == 5


def test_a_relay_dying_between_publish_and_mark_sends_the_batch_again(
    db: Engine, topic: str
) -> None:
    write(db, topic, messages(5))
    pub = Recording()

    def die(ids: list[str]) -> None:
        raise SystemExit("killed between publish and mark")

    with (
        pytest.raises(SystemExit),
        Relay(db, pub, batch_size=3, topics=[topic], midway=die) as dead,
    ):
        while dead.run_once():  # PostgreSQL's pipeline marks a full batch at the next pass
            pass
    assert unsent(db, topic) == 5  # nothing was marked
    with Relay(db, pub, batch_size=3, topics=[topic]) as relay:
        while relay.run_once():
            pass
    ids = [m.id for m in pub.published]
    assert len(ids) == 8 and len(set(ids)) == 5  # one batch (3) published twice, none lost


def test_mark_first_loses_a_batch_the_broker_refused_and_never_duplicates(
    db: Engine, topic: str
) -> None:
    write(db, topic, messages(4))
    down = Recording(down=True)
    with pytest.raises(TransportError), Relay(db, down, 3, topics=[topic], mark_first=True) as r:
        r.run_once()
    pub = Recording()
    with Relay(db, pub, batch_size=3, topics=[topic], mark_first=True) as relay:
        while relay.run_once():
            pass
    assert len(pub.published) == 1  # the first batch of 3 was marked, then lost
    assert unsent(db, topic) == 0


def test_a_key_stops_at_its_first_unconfirmed_message(db: Engine, topic: str) -> None:
    batch = messages(6)  # keys k0, k1, k0, k1, ...
    write(db, topic, batch)
    pub = Recording(refuse={batch[1].id})
    with Relay(db, pub, batch_size=10, topics=[topic]) as relay:
        relay.run_once()
        # k1's later messages were confirmed but are not marked: they go again after m1
        assert unsent(db, topic) == 3 and relay.stats.unconfirmed == 1 and relay.stats.held == 2
        relay.run_once()
        assert unsent(db, topic) == 0
    again = [batch[1].id, batch[3].id, batch[5].id]
    assert [m.id for m in pub.published] == [m.id for m in batch] + again


def test_a_refused_message_stops_the_pipeline_and_its_key_goes_again_in_order(
    db: Engine, topic: str
) -> None:
    batch = messages(9)  # keys k0, k1, k0, ...; full batches of 3
    write(db, topic, batch)
    pub = Recording(refuse={batch[1].id})
    with Relay(db, pub, batch_size=3, topics=[topic]) as relay:
        while relay.run_once() or unsent(db, topic):
            pass
    first: dict[str, list[str]] = {}
    for m in pub.published:
        seen = first.setdefault(m.key or "", [])
        if m.id not in seen:
            seen.append(m.id)
    for key, ids in first.items():  # each key's first deliveries in commit order
        assert ids == [m.id for m in batch if m.key == key]
    assert {m.id for m in pub.published} == {m.id for m in batch}


def test_the_relay_loop_waits_out_a_broker_outage(db: Engine, topic: str) -> None:
    transport = open_transport("memory", ClientConfig(url=f"memory://{topic}"))
    sub = transport.subscriber("g")
    stream = sub.subscribe(topic)
    pub = Recording(down=True, then=transport.publisher())
    write(db, topic, messages(3))
    relay = Relay(db, pub, poll_s=0.01, topics=[topic], backoff=Backoff(8, 0.05, 0.1))
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,))
    thread.start()
    try:
        threading.Event().wait(0.5)
        assert unsent(db, topic) == 3 and relay.stats.errors >= 1
        pub.down = False  # the broker is back
        got = [next(stream).message.payload for _ in range(3)]
        assert got == [b"m0", b"m1", b"m2"]
    finally:
        stop.set()
        thread.join(5)
        sub.close()
    assert not thread.is_alive()


def test_retention_deletes_sent_rows_and_the_backlog_counts_unsent(db: Engine, topic: str) -> None:
    write(db, topic, messages(2))
    with Relay(db, Recording(), batch_size=10, topics=[topic], keep_s=None) as relay:  # marks
        first = relay.backlog()
        assert first.unsent == 2 and first.oldest_s >= 0
        relay.run_once()
        write(db, topic, messages(2))
        assert relay.backlog().unsent == 2
        assert relay.purge(keep_s=3600) == 0  # sent a moment ago: kept
        assert relay.purge(keep_s=0) == 2  # the two sent rows
    with db.connect() as conn:
        assert conn.execute(select(func.count()).where(OUTBOX.c.topic == topic)).scalar() == 2
    with Relay(db, Recording(), topics=[topic]) as deleting:
        deleting.run_once()  # the default, keep_s=0: published rows are deleted, not marked
    with db.connect() as conn:
        assert conn.execute(select(func.count()).where(OUTBOX.c.topic == topic)).scalar() == 0


def test_a_stop_during_a_pass_finishes_and_marks_it(db: Engine, topic: str) -> None:
    write(db, topic, messages(5))
    stop = threading.Event()
    relay = Relay(db, Recording(), batch_size=3, topics=[topic], midway=lambda _: stop.set())
    relay.run(stop)  # SIGTERM's path: the event is set midway through the first batch
    assert relay.stats.published >= 3  # that batch (and on PostgreSQL the one claimed behind)
    assert unsent(db, topic) == 5 - relay.stats.published  # all published were marked


@pytest.mark.parametrize("ordering", ["keys", "skip-locked"])
def test_two_relays_and_one_key(db: Engine, topic: str, ordering: str) -> None:
    """Relay A is midway through a pass (published, not yet marked) when relay B passes: with
    key shares B takes nothing of A's keys; with SKIP LOCKED it publishes the key's next
    rows before A marks, and after a crash of A its rows come after them: reordered."""
    if db.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer: relays take turns, a whole pass each")
    first, later = ([Message(b"x", "one-key") for _ in range(2)] for _ in range(2))
    write(db, topic, first)
    write(db, topic, later)
    b = Recording()
    b_passed: list[int] = []

    def b_passes(_: list[str]) -> None:
        with Relay(db, b, batch_size=2, topics=[topic], ordering=ordering) as other:
            b_passed.append(other.run_once())

    with Relay(
        db, Recording(), batch_size=2, topics=[topic], ordering=ordering, midway=b_passes
    ) as a:
        while a.run_once():  # B passes while each of A's batches is published and unmarked
            pass
    seen = [m.id for m in b.published]
    assert b_passed  # B did pass while A's rows were out
    if ordering == "keys":
        assert seen == []
    else:
        assert seen == [m.id for m in later]  # the key's 3rd and 4th, while the 1st and 2nd wait


def test_a_dead_relays_shares_pass_to_the_others_in_order(db: Engine, topic: str) -> None:
    if db.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer: no key shares")
    batch = messages(6)
    write(db, topic, batch)
    dead = Relay(db, Recording(), batch_size=3, topics=[topic], midway=lambda _: dead.close())
    with pytest.raises(SQLAlchemyError):  # its connection closed under it: it "died"
        while dead.run_once():
            pass
    pub = Recording()
    with Relay(db, pub, batch_size=10, topics=[topic]) as heir:
        heir.shares.rebalance_s = 0.0  # type: ignore[union-attr]
        while heir.run_once() or unsent(db, topic):
            pass
        assert len(heir.shares.owned) == SHARDS  # type: ignore[union-attr]
    assert [m.id for m in pub.published] == [m.id for m in batch]  # its unmarked rows, in order


def test_rows_committed_out_of_position_order_are_not_skipped(db: Engine, topic: str) -> None:
    if db.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer: rows commit in position order")
    early, late = messages(1), messages(1)
    pub = Recording()
    with db.connect() as slow, Relay(db, pub, topics=[topic]) as relay:
        tx = slow.begin()
        Outbox.add(slow, topic, early)  # the lower position, still uncommitted
        write(db, topic, late)  # a higher position, committed first
        relay.run_once()
        tx.commit()
        relay.run_once()
    assert [m.id for m in pub.published] == [late[0].id, early[0].id]


def test_a_commit_wakes_the_relay(db: Engine, topic: str) -> None:
    if db.dialect.name == "sqlite":
        pytest.skip("SQLite has no notifications: its relay polls")
    transport = open_transport("memory", ClientConfig(url=f"memory://{topic}"))
    sub = transport.subscriber("g")
    stream = sub.subscribe(topic)
    relay = Relay(db, transport.publisher(), poll_s=30, topics=[topic])  # the poll never comes
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,))
    thread.start()
    try:
        threading.Event().wait(0.3)  # asleep now
        t0 = time.monotonic()
        write(db, topic, messages(1))
        assert next(stream).message.payload == b"m0"
        assert time.monotonic() - t0 < 2.0  # woken by the commit, not by a 30 s poll
    finally:
        stop.set()
        thread.join(5)
        sub.close()
    assert not thread.is_alive()


def test_the_metrics_show_the_relays_counters_and_the_backlog(db: Engine, topic: str) -> None:
    write(db, topic, messages(3))
    with Relay(db, Recording(), batch_size=2, topics=[topic]) as relay:
        served = export_relays(0, [relay], relay.backlog)
        try:
            before = scrape(served.port)
            assert before["msglab_outbox_unsent"] == 3
            assert before["msglab_outbox_oldest_unsent_seconds"] >= 0
            while relay.run_once():
                pass
            after = scrape(served.port)
        finally:
            served.close()
    assert after['msglab_relay_published_total{relay="0"}'] == 3
    assert after["msglab_outbox_unsent"] == 0


def scrape(port: int) -> dict[str, float]:
    """A scrape of ``/metrics`` as {series: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line and not line.startswith("#")
    }
