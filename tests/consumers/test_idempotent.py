"""The idempotent consumer on the real PostgreSQL and on SQLite: effects once per message id
and group."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, select, text
from sqlalchemy.engine import Connection, Engine

from msglab.config import Backoff
from msglab.consumers.idempotent import IdempotentConsumer
from msglab.message import Message

pytestmark = pytest.mark.postgres

METADATA = MetaData()
APPLIED = Table("test_applied", METADATA, Column("group_name", String), Column("id", String))


@pytest.fixture
def db(any_db: Engine) -> Engine:
    return any_db


@pytest.fixture(autouse=True)
def applied_table(db: Engine) -> None:
    METADATA.create_all(db)


@pytest.fixture
def consumer(db: Engine) -> IdempotentConsumer:
    c = IdempotentConsumer(db, f"g-{uuid.uuid4().hex[:8]}", Backoff(attempts=3, first_s=0.05))
    c.create_table()
    return c


def record(group: str) -> Any:
    def effect(conn: Connection, fresh: Sequence[Message]) -> None:
        conn.execute(APPLIED.insert(), [{"group_name": group, "id": m.id} for m in fresh])

    return effect


def applied(db: Engine, group: str) -> list[str]:
    with db.connect() as conn:
        rows = conn.execute(select(APPLIED.c.id).where(APPLIED.c.group_name == group))
        return sorted(r[0] for r in rows)


def test_a_message_delivered_twice_is_applied_once(
    db: Engine, consumer: IdempotentConsumer
) -> None:
    a, b, c = (Message(b"x") for _ in range(3))
    assert consumer.handle([a, b], record(consumer.group)) == [a, b]
    assert consumer.handle([b, c, c], record(consumer.group)) == [c]  # b again, c twice
    assert consumer.handle([a], record(consumer.group)) == []
    assert applied(db, consumer.group) == sorted([a.id, b.id, c.id])


def test_a_failed_effect_leaves_no_claim(db: Engine, consumer: IdempotentConsumer) -> None:
    m = Message(b"x")

    def failing(conn: Connection, fresh: Sequence[Message]) -> None:
        record(consumer.group)(conn, fresh)
        raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        consumer.handle([m], failing)
    assert applied(db, consumer.group) == []
    assert consumer.handle([m], record(consumer.group)) == [m]  # the redelivery applies it
    assert applied(db, consumer.group) == [m.id]


def test_a_lost_connection_is_retried_and_applied_once(
    db: Engine, consumer: IdempotentConsumer
) -> None:
    if db.dialect.name == "sqlite":
        pytest.skip("a SQLite file has no connection to lose")
    m = Message(b"x")
    calls = []

    def dies_once(conn: Connection, fresh: Sequence[Message]) -> None:
        calls.append(1)
        record(consumer.group)(conn, fresh)
        if len(calls) == 1:  # the server ends this session mid-transaction
            conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

    assert consumer.handle([m], dies_once) == [m]
    assert len(calls) == 2
    assert applied(db, consumer.group) == [m.id]


def test_each_group_applies_the_message(db: Engine, consumer: IdempotentConsumer) -> None:
    m = Message(b"x")
    other = IdempotentConsumer(db, consumer.group + "-other")
    assert consumer.handle([m], record(consumer.group)) == [m]
    assert other.handle([m], record(other.group)) == [m]


def test_the_handler_form_and_forget(db: Engine, consumer: IdempotentConsumer) -> None:
    m = Message(b"x")
    seen: list[str] = []
    handler = consumer.handler(lambda conn, message: seen.append(message.id))
    handler(m)
    handler(m)
    assert seen == [m.id]
    assert consumer.forget(timedelta(hours=1)) == 0  # claims are younger than an hour
    aged = datetime.now(UTC) - timedelta(hours=2)
    if db.dialect.name == "sqlite":
        aged = aged.replace(tzinfo=None)
    with db.begin() as conn:  # age the claim
        conn.execute(
            text("UPDATE msglab_processed SET processed_at = :t WHERE consumer_group = :g"),
            {"g": consumer.group, "t": aged},
        )
    assert consumer.forget(timedelta(hours=1)) == 1
    handler(m)
    assert seen == [m.id, m.id]  # forgotten: applied again, as forget's contract says
