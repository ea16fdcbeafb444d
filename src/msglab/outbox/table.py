"""The outbox table and its writer, used inside the caller's own transaction.

``msglab_outbox``: ``position`` (the relay's order), ``id`` (the message id, unique: writing
the same message twice, as a retried transaction may, stores it once), ``topic``, ``key``,
``shard`` (which of ``SHARDS`` key shares the row belongs to: every row of a key has the same
one, so the relay that owns a share owns the key's order), ``headers`` (JSON), ``payload``,
``created_at``, and ``sent_at`` (NULL until the relay marked it sent). A partial index on the
unsent rows keeps the relay's query short however many sent rows are kept.

PostgreSQL or SQLite (``sqlite:///orders.db``: WAL mode, one writer at a time, no wake on
commit: the relay polls). On PostgreSQL ``Outbox.add`` also notifies ``CHANNEL`` in the
caller's transaction: the notification is delivered when it commits, and a relay that
``LISTEN``s wakes at once instead of at its next poll.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime

from msglab.config import check_name
from msglab.errors import ConfigError
from msglab.extras import driver_import
from msglab.message import Message

with driver_import("sqlite", __name__):
    from sqlalchemy import (
        JSON,
        BigInteger,
        Column,
        DateTime,
        Identity,
        Index,
        Integer,
        LargeBinary,
        MetaData,
        SmallInteger,
        String,
        Table,
        func,
        inspect,
        text,
    )
    from sqlalchemy.dialects.postgresql import JSONB
    from sqlalchemy.engine import Connection, Engine

SHARDS = 64
"""Key shares: a row's ``shard`` is ``crc32(key) % SHARDS`` (of its id when it has no key)."""
CHANNEL = "msglab_outbox"
"""The PostgreSQL notification channel ``Outbox.add`` notifies and relays listen on."""
DIALECTS = ("postgresql", "sqlite")

METADATA = MetaData()
OUTBOX = Table(
    "msglab_outbox",
    METADATA,
    Column("position", BigInteger().with_variant(Integer, "sqlite"), Identity(), primary_key=True),
    Column("id", String(200), nullable=False, unique=True),
    Column("topic", String(255), nullable=False),
    Column("key", String, nullable=True),
    Column("shard", SmallInteger, nullable=False, server_default="0"),
    Column("headers", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Index(
        "msglab_outbox_unsent",
        "position",
        postgresql_where=text("sent_at IS NULL"),
        sqlite_where=text("sent_at IS NULL"),
    ),
)

# one statement for any number of messages: arrays of the columns, unnested; the notification
# is sent at commit (and once per transaction however many statements send the same one)
_ADD_PG = text(
    "WITH added AS (INSERT INTO msglab_outbox (id, topic, key, shard, headers, payload) "
    "SELECT u.id, :topic, u.key, u.shard, CAST(u.headers AS jsonb), u.payload "
    "FROM unnest(CAST(:ids AS text[]), CAST(:keys AS text[]), CAST(:shards AS smallint[]), "
    "CAST(:headers AS text[]), CAST(:payloads AS bytea[])) AS u(id, key, shard, headers, payload) "
    "ON CONFLICT (id) DO NOTHING RETURNING 1) "
    f"SELECT pg_notify('{CHANNEL}', :topic)"
)
_ADD_PG_QUIET = text(
    "INSERT INTO msglab_outbox (id, topic, key, shard, headers, payload) "
    "SELECT u.id, :topic, u.key, u.shard, CAST(u.headers AS jsonb), u.payload "
    "FROM unnest(CAST(:ids AS text[]), CAST(:keys AS text[]), CAST(:shards AS smallint[]), "
    "CAST(:headers AS text[]), CAST(:payloads AS bytea[])) AS u(id, key, shard, headers, payload) "
    "ON CONFLICT (id) DO NOTHING"
)
_ADD_SQLITE = text(
    "INSERT OR IGNORE INTO msglab_outbox "
    "(id, topic, key, shard, headers, payload, created_at) "
    "VALUES (:id, :topic, :key, :shard, :headers, :payload, :created_at)"
)


def shard_of(key: str | None, message_id: str) -> int:
    """The key share of a message: the same for every message of a key."""
    return zlib.crc32((message_id if key is None else key).encode()) % SHARDS


def dialect_of(engine: Engine | Connection) -> str:
    """``postgresql`` or ``sqlite``; any other database is a ConfigError naming those two."""
    name = engine.dialect.name
    if name not in DIALECTS:
        raise ConfigError(f"the outbox lives in PostgreSQL or SQLite, not {name}")
    return name


def utcnow() -> datetime:
    """Now, in UTC without a zone: how the SQLite outbox stores its times."""
    return datetime.now(UTC).replace(tzinfo=None)


class Outbox:
    """Writes messages to the outbox table in the caller's transaction (``add``)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        dialect_of(engine)

    def create_table(self) -> None:
        """Create the table and its index (nothing when they exist), and add the ``shard``
        column to a table made before it existed."""
        METADATA.create_all(self._engine)
        columns = {c["name"] for c in inspect(self._engine).get_columns(OUTBOX.name)}
        if "shard" not in columns:
            with self._engine.begin() as conn:
                conn.execute(
                    text("ALTER TABLE msglab_outbox ADD COLUMN shard smallint NOT NULL DEFAULT 0")
                )

    @staticmethod
    def add(conn: Connection, topic: str, messages: Sequence[Message], notify: bool = True) -> None:
        """Store ``messages`` for ``topic`` through ``conn``, inside the transaction the caller
        holds open: they are published once it commits, never if it rolls back. An id already
        stored is skipped (a retried transaction stores each message once). On PostgreSQL the
        add notifies ``CHANNEL`` (delivered at commit; a listening relay wakes at once) unless
        ``notify`` is False: each notifying commit takes PostgreSQL's notification queue lock
        for a moment, which a relay that only polls does not need."""
        add(conn, topic, messages, notify)


def add(conn: Connection, topic: str, messages: Sequence[Message], notify: bool = True) -> None:
    """``Outbox.add``."""
    check_name("topic", topic)
    if not messages:
        return
    shards = [shard_of(m.key, m.id) for m in messages]
    if dialect_of(conn) == "sqlite":
        now = utcnow().isoformat(sep=" ")
        conn.execute(
            _ADD_SQLITE,
            [
                {
                    "id": m.id,
                    "topic": topic,
                    "key": m.key,
                    "shard": s,
                    "headers": json.dumps(dict(m.headers)),
                    "payload": bytes(m.payload),
                    "created_at": now,
                }
                for m, s in zip(messages, shards, strict=True)
            ],
        )
        return
    conn.execute(
        _ADD_PG if notify else _ADD_PG_QUIET,
        {
            "topic": topic,
            "ids": [m.id for m in messages],
            "keys": [m.key for m in messages],
            "shards": shards,
            "headers": [json.dumps(dict(m.headers)) for m in messages],
            "payloads": [bytes(m.payload) for m in messages],
        },
    )
