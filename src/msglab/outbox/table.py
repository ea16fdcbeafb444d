"""The outbox table and its writer, used inside the caller's own transaction.

``msglab_outbox``: ``position`` (identity, the relay's order), ``id`` (the message id, unique:
writing the same message twice, as a retried transaction may, stores it once), ``topic``,
``key``, ``headers`` (jsonb), ``payload`` (bytea), ``created_at``, and ``sent_at`` (NULL until
the relay marked it sent). A partial index on the unsent rows keeps the relay's query short
however many sent rows are kept. PostgreSQL only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from msglab.config import check_name
from msglab.extras import driver_import
from msglab.message import Message

with driver_import("postgres", __name__):
    from sqlalchemy import (
        BigInteger,
        Column,
        DateTime,
        Identity,
        Index,
        LargeBinary,
        MetaData,
        String,
        Table,
        func,
        text,
    )
    from sqlalchemy.dialects.postgresql import JSONB
    from sqlalchemy.engine import Connection, Engine

METADATA = MetaData()
OUTBOX = Table(
    "msglab_outbox",
    METADATA,
    Column("position", BigInteger, Identity(), primary_key=True),
    Column("id", String(200), nullable=False, unique=True),
    Column("topic", String(255), nullable=False),
    Column("key", String, nullable=True),
    Column("headers", JSONB, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Index(
        "msglab_outbox_unsent",
        "position",
        postgresql_where=text("sent_at IS NULL"),
    ),
)

# one statement for any number of messages: arrays of the columns, unnested
_ADD = text(
    "INSERT INTO msglab_outbox (id, topic, key, headers, payload) "
    "SELECT u.id, :topic, u.key, CAST(u.headers AS jsonb), u.payload "
    "FROM unnest(CAST(:ids AS text[]), CAST(:keys AS text[]), CAST(:headers AS text[]), "
    "CAST(:payloads AS bytea[])) AS u(id, key, headers, payload) "
    "ON CONFLICT (id) DO NOTHING"
)


class Outbox:
    """Writes messages to the outbox table in the caller's transaction."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create_table(self) -> None:
        METADATA.create_all(self._engine)

    @staticmethod
    def add(conn: Connection, topic: str, messages: Sequence[Message]) -> None:
        """Store ``messages`` for ``topic`` through ``conn``, inside the transaction the caller
        holds open: they are published once it commits, never if it rolls back. An id already
        stored is skipped (a retried transaction stores each message once)."""
        check_name("topic", topic)
        if not messages:
            return
        conn.execute(
            _ADD,
            {
                "topic": topic,
                "ids": [m.id for m in messages],
                "keys": [m.key for m in messages],
                "headers": [json.dumps(dict(m.headers)) for m in messages],
                "payloads": [bytes(m.payload) for m in messages],
            },
        )
