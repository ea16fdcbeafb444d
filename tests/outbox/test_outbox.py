"""The outbox and its relay on the real PostgreSQL (the in-memory transport is the publisher:
these tests are about the table and the relay, the lab's rows about the brokers)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.errors import PublishError, TransportError
from msglab.message import Message
from msglab.outbox import OUTBOX, Outbox, Relay
from msglab.ports import Publisher

pytestmark = pytest.mark.postgres


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
    relay = Relay(db, pub, batch_size=2, topics=[topic])
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

    with pytest.raises(SystemExit):
        Relay(db, pub, batch_size=3, topics=[topic], midway=die).run_once()
    assert unsent(db, topic) == 5  # nothing was marked
    relay = Relay(db, pub, batch_size=3, topics=[topic])
    while relay.run_once():
        pass
    ids = [m.id for m in pub.published]
    assert len(ids) == 8 and len(set(ids)) == 5  # one batch (3) published twice, none lost


def test_mark_first_loses_a_batch_the_broker_refused_and_never_duplicates(
    db: Engine, topic: str
) -> None:
    write(db, topic, messages(4))
    with pytest.raises(TransportError):
        Relay(db, Recording(down=True), batch_size=3, topics=[topic], mark_first=True).run_once()
    pub = Recording()
    relay = Relay(db, pub, batch_size=3, topics=[topic], mark_first=True)
    while relay.run_once():
        pass
    assert len(pub.published) == 1  # the first batch of 3 was marked, then lost
    assert unsent(db, topic) == 0


def test_unconfirmed_messages_stay_unsent_and_go_again(db: Engine, topic: str) -> None:
    batch = messages(4)
    write(db, topic, batch)
    pub = Recording(refuse={batch[1].id})
    relay = Relay(db, pub, batch_size=10, topics=[topic])
    relay.run_once()
    assert unsent(db, topic) == 1 and relay.stats.unconfirmed == 1
    relay.run_once()
    assert unsent(db, topic) == 0
    assert [m.id for m in pub.published] == [m.id for m in batch] + [batch[1].id]


def test_the_relay_loop_waits_out_a_broker_outage(db: Engine, topic: str) -> None:
    transport = open_transport("memory", ClientConfig(url=f"memory://{topic}"))
    sub = transport.subscriber("g")
    stream = sub.subscribe(topic)
    pub = Recording(down=True, then=transport.publisher())
    write(db, topic, messages(3))
    relay = Relay(db, pub, poll_s=0.01, topics=[topic])
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
