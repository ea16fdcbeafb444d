"""The lab's database: the consumers' side effect and the producers' business rows.

``lab_effects``: one row per handled message. The table deliberately has no unique key: a
message handled twice leaves two rows, which is what ``duplicate_effects`` counts. Rows are
inserted in one transaction per batch, before the batch is acked (under effectively-once with
the idempotent consumer's claim in the same transaction).

``lab_orders``: the business change of a producer whose messages go through the database
(every pattern but ``direct``): one row per message, committed before (dual write), after
(publish-then-commit) or with (outbox, cdc) the message. A retried transaction stores each row
once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msglab.config import Backoff
from msglab.consumers.idempotent import IdempotentConsumer, in_transaction
from msglab.extras import driver_import
from msglab.lab.evidence import read_line
from msglab.message import Message
from msglab.outbox import Outbox

with driver_import("postgres", __name__):
    from sqlalchemy import Column, Float, MetaData, String, Table, select, text
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.exc import OperationalError

METADATA = MetaData()
EFFECTS = Table(
    "lab_effects",
    METADATA,
    Column("run_id", String, nullable=False, index=True),
    Column("message_id", String, nullable=False),
    Column("consumer", String, nullable=False),
    Column("ts", Float, nullable=False),
)
ORDERS = Table(
    "lab_orders",
    METADATA,
    Column("message_id", String, primary_key=True),
    Column("run_id", String, nullable=False, index=True),
    Column("ts", Float, nullable=False),
)
RETRY = Backoff(attempts=20, first_s=0.2, max_s=2.0)  # a killed PostgreSQL is back within ~1 s


def create(db: Engine) -> None:
    """The lab's tables, the outbox's and the idempotent consumer's."""
    METADATA.create_all(db)
    Outbox(db).create_table()
    IdempotentConsumer(db, "lab").create_table()


# One statement per batch, the ids and times as two arrays: an executemany of INSERTs is one
# statement per row in psycopg's pipeline, which cost ~70 us of the consumer's Python per row
# (measured: 5.2 of a consumer's 9.2 s for 40 000 messages).
_INSERT_BATCH = text(
    "INSERT INTO lab_effects (run_id, message_id, consumer, ts) "
    "SELECT :run_id, u.message_id, :consumer, u.ts "
    "FROM unnest(CAST(:ids AS text[]), CAST(:times AS float8[])) AS u(message_id, ts)"
)


def apply(
    db: Engine,
    run_id: str,
    consumer: str,
    messages: Sequence[Message],
    dedup: IdempotentConsumer | None = None,
) -> None:
    """One effect row per message, committed before this returns; with ``dedup``, only for
    the messages its group has not processed before. A lost connection is retried (a commit
    whose answer was lost may then be applied twice, unless ``dedup``)."""

    def insert(conn: Connection, fresh: Sequence[Message]) -> None:
        now = time.time()
        conn.execute(
            _INSERT_BATCH,
            {
                "run_id": run_id,
                "consumer": consumer,
                "ids": [m.id for m in fresh],
                "times": [now] * len(fresh),
            },
        )

    if dedup is not None:
        dedup.handle(messages, insert)
    else:
        in_transaction(db, lambda conn: insert(conn, messages), RETRY)


_INSERT_ORDERS = text(
    "INSERT INTO lab_orders (message_id, run_id, ts) "
    "SELECT u.id, :run_id, :ts FROM unnest(CAST(:ids AS text[])) AS u(id) "
    "ON CONFLICT DO NOTHING"
)


def commit_orders(
    db: Engine, run_id: str, topic: str, messages: Sequence[Message], outbox: bool
) -> str:
    """The producer's business transaction: one ``lab_orders`` row per message and, with
    ``outbox``, the messages in the outbox table. Its outcome: ``ok`` (committed), ``fail``
    (rolled back: it failed before the commit) or ``unknown`` (the commit's answer was lost)."""
    try:
        with db.connect() as conn:
            tx = conn.begin()
            try:
                conn.execute(
                    _INSERT_ORDERS,
                    {"run_id": run_id, "ts": time.time(), "ids": [m.id for m in messages]},
                )
                if outbox:
                    Outbox.add(conn, topic, messages)
            except OperationalError:
                return "fail"
            try:
                tx.commit()
            except OperationalError:
                return "unknown"
    except OperationalError:
        return "fail"
    return "ok"


def discard_outbox(db: Engine, topic: str) -> None:
    """Delete a finished run's outbox rows (the evidence has what happened)."""
    with db.begin() as conn:
        conn.execute(text("DELETE FROM msglab_outbox WHERE topic = :t"), {"t": topic})


def dump(db: Engine, run_id: str, path: Path) -> int:
    # ``path`` is named effects-db.jsonl so that evidence.read(dir, "effects") finds it
    """Write the run's effect rows to ``path`` as JSON Lines; the number of rows."""
    query = (
        select(EFFECTS.c.message_id, EFFECTS.c.consumer, EFFECTS.c.ts)
        .where(EFFECTS.c.run_id == run_id)
        .order_by(EFFECTS.c.ts)
    )
    n = 0
    with db.connect() as conn, open(path, "w", encoding="utf-8") as out:
        for mid, consumer, ts in conn.execute(query):
            record: dict[str, Any] = {"id": mid, "consumer": consumer, "ts": ts}
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
            n += 1
    return n


def dump_orders(db: Engine, run_id: str, path: Path) -> int:
    """What the database kept of the run's committed business transactions: a ``stored``
    line per ``lab_orders`` row of ``run_id`` (docs/evidence.md); the number of rows."""
    query = text("SELECT message_id, ts FROM lab_orders WHERE run_id = :r ORDER BY ts")
    n = 0
    with db.connect() as conn, open(path, "w", encoding="utf-8") as out:
        for mid, ts in conn.execute(query, {"r": run_id}):
            out.write(read_line("db", mid, ts))
            n += 1
    return n
