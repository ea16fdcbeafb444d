"""The relay's statements on the outbox table, one class per database.

Every method runs on the connection (and inside the transaction) the caller gives it. Rows
come back in position order. ``claim`` takes the unsent rows of the given key shares (all
shares: None), past ``after`` when given (the pipelined relay's next batch, claimed while the
one before is still unmarked); with ``skip_locked`` (PostgreSQL) it locks them and skips rows
another transaction holds: what several relays without key shares do, and why they reorder a key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from msglab.extras import driver_import
from msglab.outbox.table import dialect_of, utcnow

with driver_import("sqlite", __name__):
    from sqlalchemy import bindparam, text
    from sqlalchemy.engine import Connection, Engine, Row

_COLUMNS = "position, id, topic, key, headers, payload"
_PG_COLUMNS = "position, id, topic, key, CAST(headers AS text) AS headers, payload"
"""PostgreSQL's: the headers as JSON text, parsed only when not empty (psycopg's jsonb loader
parses every row's, ~7 us each, a fifth of a pass when most rows have none)."""


# built once: a pass marks or deletes each batch with one of these
_PG_MARK = text("UPDATE msglab_outbox SET sent_at = now() WHERE position = ANY(:p)")
_PG_DELETE = text("DELETE FROM msglab_outbox WHERE position = ANY(:p)")
_SQLITE_MARK = text("UPDATE msglab_outbox SET sent_at = :now WHERE position IN :p").bindparams(
    bindparam("p", expanding=True)
)
_SQLITE_DELETE = text("DELETE FROM msglab_outbox WHERE position IN :p").bindparams(
    bindparam("p", expanding=True)
)


@dataclass(frozen=True)
class Backlog:
    """The unsent rows: how many, and how long the oldest has waited (0 when none)."""

    unsent: int
    oldest_s: float


class PostgresStore:
    """PostgreSQL: arrays for the positions, ``now()`` for the times."""

    def __init__(self, topics: Sequence[str] | None, skip_locked: bool = False) -> None:
        self._topics = list(topics) if topics is not None else None
        where = "sent_at IS NULL AND (CAST(:topics AS text[]) IS NULL OR topic = ANY(:topics))"
        shards = (
            " AND (CAST(:shards AS smallint[]) IS NULL OR shard = ANY(:shards))"
            " AND (CAST(:after AS bigint) IS NULL OR position > :after)"
        )
        lock = " FOR UPDATE SKIP LOCKED" if skip_locked else ""
        self._claim = text(
            f"SELECT {_PG_COLUMNS} FROM msglab_outbox WHERE {where}{shards} "
            f"ORDER BY position LIMIT :limit{lock}"
        )
        self._backlog = text(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) "
            f"FROM msglab_outbox WHERE {where}"
        )

    def claim(
        self,
        conn: Connection,
        shards: Sequence[int] | None,
        limit: int,
        after: int | None = None,
    ) -> list[Row[Any]]:
        params = {"topics": self._topics, "shards": shards, "limit": limit, "after": after}
        return list(conn.execute(self._claim, params).all())

    @staticmethod
    def mark(conn: Connection, positions: list[int]) -> None:
        conn.execute(_PG_MARK, {"p": positions})

    @staticmethod
    def delete(conn: Connection, positions: list[int]) -> None:
        conn.execute(_PG_DELETE, {"p": positions})

    def backlog(self, conn: Connection) -> Backlog:
        unsent, oldest = conn.execute(self._backlog, {"topics": self._topics}).one()
        return Backlog(int(unsent), float(oldest))

    def purge(self, conn: Connection, keep_s: float, limit: int) -> int:
        return conn.execute(
            text(
                "DELETE FROM msglab_outbox WHERE position IN (SELECT position FROM msglab_outbox "
                "WHERE sent_at < now() - make_interval(secs => :s) "
                "AND (CAST(:topics AS text[]) IS NULL OR topic = ANY(:topics)) LIMIT :limit)"
            ),
            {"s": keep_s, "limit": limit, "topics": self._topics},
        ).rowcount


class SqliteStore:
    """SQLite: expanding ``IN`` lists, times written by Python in UTC (ISO text)."""

    def __init__(self, topics: Sequence[str] | None) -> None:
        self._topics = list(topics) if topics is not None else None
        where = "sent_at IS NULL" + (" AND topic IN :topics" if topics is not None else "")
        expand: list[Any] = [bindparam("topics", expanding=True)] if topics is not None else []
        self._claim = text(
            f"SELECT {_COLUMNS} FROM msglab_outbox WHERE {where} ORDER BY position LIMIT :limit"
        ).bindparams(*expand)
        self._backlog = text(
            f"SELECT count(*), min(created_at) FROM msglab_outbox WHERE {where}"
        ).bindparams(*expand)
        self._purge = text(
            "DELETE FROM msglab_outbox WHERE position IN (SELECT position FROM msglab_outbox "
            "WHERE sent_at < :cutoff"
            + (" AND topic IN :topics" if topics is not None else "")
            + " LIMIT :limit)"
        ).bindparams(*expand)
        self._params: dict[str, Any] = {"topics": self._topics} if topics is not None else {}

    def claim(
        self,
        conn: Connection,
        shards: Sequence[int] | None,
        limit: int,
        after: int | None = None,
    ) -> list[Row[Any]]:
        """Every share's rows (SQLite has one writer: ``shards`` does not narrow the claim, and
        its relay does not pipeline: ``after`` is never given)."""
        return list(conn.execute(self._claim, {**self._params, "limit": limit}).all())

    @staticmethod
    def mark(conn: Connection, positions: list[int]) -> None:
        conn.execute(_SQLITE_MARK, {"p": positions, "now": utcnow().isoformat(sep=" ")})

    @staticmethod
    def delete(conn: Connection, positions: list[int]) -> None:
        conn.execute(_SQLITE_DELETE, {"p": positions})

    def backlog(self, conn: Connection) -> Backlog:
        unsent, oldest = conn.execute(self._backlog, self._params).one()
        if not oldest:
            return Backlog(int(unsent), 0.0)
        waited = utcnow() - datetime.fromisoformat(str(oldest))
        return Backlog(int(unsent), max(waited / timedelta(seconds=1), 0.0))

    def purge(self, conn: Connection, keep_s: float, limit: int) -> int:
        cutoff = (utcnow() - timedelta(seconds=keep_s)).isoformat(sep=" ")
        return conn.execute(
            self._purge, {**self._params, "cutoff": cutoff, "limit": limit}
        ).rowcount


Store = PostgresStore | SqliteStore


def store_for(engine: Engine, topics: Sequence[str] | None, skip_locked: bool = False) -> Store:
    """The statements for ``engine``'s database."""
    if dialect_of(engine) == "sqlite":
        return SqliteStore(topics)
    return PostgresStore(topics, skip_locked)
