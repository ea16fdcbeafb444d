"""The idempotent consumer: a message's effect is applied once per consumer group, however
often the message is delivered (MassTransit's inbox, Watermill's deduplicator, with the
dedup row in the handler's own transaction).

How: the effect and one row ``(consumer_group, message_id)`` of ``msglab_processed`` are
written in one database transaction. The row's primary key turns a second delivery's claim
into a no-op, and the effect is skipped for it. Claim and effect commit together, so a crash
between them leaves neither and the redelivery applies both; a commit whose answer was lost
(the connection died) is retried and finds the claim, so it is not applied twice. Acknowledge
the delivery after ``handle`` returns: at-least-once delivery plus this gives
effectively-once effects. The effect must write only through the connection it is given.

Message ids are the dedup key (producer-assigned, unique: ``msglab.message``). PostgreSQL
(``INSERT ... ON CONFLICT ... RETURNING`` with an array of ids, one statement a batch) or
SQLite (``INSERT OR IGNORE ... RETURNING``, one statement a batch; ``msglab.db.engine`` opens
it in WAL mode with one writer at a time, so consumers there take turns).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from msglab.config import Backoff
from msglab.extras import driver_import
from msglab.message import Message
from msglab.ports import Handler

with driver_import("sqlite", __name__):
    from sqlalchemy import Column, DateTime, MetaData, String, Table, func, insert, text
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.exc import OperationalError

METADATA = MetaData()
PROCESSED = Table(
    "msglab_processed",
    METADATA,
    Column("consumer_group", String(200), primary_key=True),
    Column("message_id", String(200), primary_key=True),
    Column("processed_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)

_CLAIM = text(
    "INSERT INTO msglab_processed (consumer_group, message_id) "
    "SELECT :group, u.id FROM unnest(CAST(:ids AS text[])) AS u(id) "
    "ON CONFLICT DO NOTHING RETURNING message_id"
)

_UNCLAIM = text(
    "DELETE FROM msglab_processed WHERE consumer_group = :group "
    "AND message_id = ANY(CAST(:ids AS text[]))"
)

_SQLITE_IDS = 10_000
"""Ids per SQLite claim statement (two variables each, under SQLite's limit of 32,766)."""

BatchEffect = Callable[[Connection, Sequence[Message]], None]
"""Applies the effect of messages seen for the first time, through the given connection (its
transaction is the claim's)."""


class IdempotentConsumer:
    """Applies effects at most once per message id for one consumer group.

    ``retry``: how often and how long to retry a transaction whose database connection was lost
    (a restarted PostgreSQL); after the last attempt the error is raised and the caller should
    ``nack`` the delivery so it comes again.
    """

    def __init__(self, engine: Engine, group: str, retry: Backoff | None = None) -> None:
        self._engine = engine
        self.group = group
        self._retry = retry or Backoff(attempts=10, first_s=0.2, max_s=2.0)

    def create_table(self) -> None:
        METADATA.create_all(self._engine)

    def claim(self, conn: Connection, ids: Sequence[str]) -> set[str]:
        """In the caller's transaction: claim ``ids`` for this group; the ids claimed now (not
        processed before). The claim commits or rolls back with that transaction."""
        unique = list(dict.fromkeys(ids))
        if conn.dialect.name != "sqlite":
            rows = conn.execute(_CLAIM, {"group": self.group, "ids": unique})
            return {row[0] for row in rows}
        claimed: set[str] = set()
        for i in range(0, len(unique), _SQLITE_IDS):
            values = [
                {"consumer_group": self.group, "message_id": m} for m in unique[i : i + _SQLITE_IDS]
            ]
            statement = (insert(PROCESSED).values(values).prefix_with("OR IGNORE")).returning(
                PROCESSED.c.message_id
            )
            claimed.update(conn.execute(statement).scalars())
        return claimed

    def unclaim(self, conn: Connection, ids: Sequence[str]) -> None:
        """In the caller's transaction: drop this group's claims of ``ids`` (messages whose
        effect failed inside a batch that commits the others), so they apply when they come
        again."""
        if conn.dialect.name != "sqlite":
            conn.execute(_UNCLAIM, {"group": self.group, "ids": list(ids)})
            return
        conn.execute(
            PROCESSED.delete().where(
                PROCESSED.c.consumer_group == self.group, PROCESSED.c.message_id.in_(list(ids))
            )
        )

    def handle(self, messages: Sequence[Message], effect: BatchEffect) -> list[Message]:
        """In one transaction, claim the messages and apply ``effect`` to those not processed
        before (in their order, each id once); the messages applied now. Committed when this
        returns; a lost connection is retried per ``retry``, the effect rolled back each time."""

        def transaction(conn: Connection) -> list[Message]:
            new = self.claim(conn, [m.id for m in messages])
            fresh: list[Message] = []
            for m in messages:
                if m.id in new:
                    new.discard(m.id)  # a second copy in the same batch is a duplicate too
                    fresh.append(m)
            if fresh:
                effect(conn, fresh)
            return fresh

        return in_transaction(self._engine, transaction, self._retry)

    def handler(self, effect: Callable[[Connection, Message], None]) -> Handler:
        """A ``Handler`` applying ``effect`` once per message id (for a ``subscribe`` loop that
        acks after the handler returns)."""

        def each(conn: Connection, fresh: Sequence[Message]) -> None:
            for m in fresh:
                effect(conn, m)

        def handle_one(message: Message) -> None:
            self.handle([message], each)

        return handle_one

    def forget(self, older_than: timedelta) -> int:
        """Delete this group's claims older than ``older_than``; how many. A message delivered
        again after that is applied again: keep claims longer than any redelivery can come."""
        cutoff = datetime.now(UTC) - older_than
        if self._engine.dialect.name == "sqlite":  # its times: UTC text without a zone
            cutoff = cutoff.replace(tzinfo=None)
        with self._engine.begin() as conn:
            result = conn.execute(
                PROCESSED.delete().where(
                    PROCESSED.c.consumer_group == self.group,
                    PROCESSED.c.processed_at < cutoff,
                )
            )
            return result.rowcount


T = TypeVar("T")


def in_transaction(engine: Engine, work: Callable[[Connection], T], retry: Backoff) -> T:
    """``work(conn)`` in one committed transaction, run again per ``retry`` after an
    OperationalError (a lost or refused connection, a deadlock: the transaction was rolled
    back, or its commit's answer was lost); a fresh connection each time; the last error is
    raised."""
    delays = retry.delays()
    for attempt in range(len(delays) + 1):
        try:
            with engine.begin() as conn:
                return work(conn)
        except OperationalError:
            if attempt == len(delays):
                raise
            time.sleep(delays[attempt])
    raise AssertionError("unreachable")
