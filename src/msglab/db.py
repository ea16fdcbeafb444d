"""A SQLAlchemy engine for a database URL, as every part of msglab that keeps rows opens it."""

from __future__ import annotations

from typing import Any

from msglab.config import redact_url
from msglab.errors import ConnectError
from msglab.extras import driver_import, require

with driver_import("sqlite", __name__):
    from sqlalchemy import create_engine, event, inspect
    from sqlalchemy.engine import Engine
    from sqlalchemy.exc import OperationalError

SQLITE_BUSY_S = 30.0
"""How long a SQLite transaction waits for the one writer before it fails (``database is
locked``)."""


def engine(url: str) -> Engine:
    """An engine for ``url``.

    ``postgresql://``: through psycopg 3; connections are checked before use (a restarted
    server) and fail within 5 s when it is unreachable.
    ``sqlite:///path.db``: the file in WAL mode (readers do not wait for the writer), every
    transaction ``BEGIN IMMEDIATE`` (it takes the one write lock at its start, so a read then a
    write inside it is never refused halfway: two relays or writers take turns), waiting up to
    ``SQLITE_BUSY_S`` for it; ``synchronous`` stays FULL (a commit is on disk when it returns).
    """
    if url.startswith("postgresql"):
        require("postgres", what="a PostgreSQL database")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    db = create_engine(url, connect_args={"timeout": SQLITE_BUSY_S, "check_same_thread": False})

    @event.listens_for(db, "connect")
    def _wal(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" below starts them
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @event.listens_for(db, "begin")
    def _immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return db


def has_table(db: Engine, table: str) -> bool:
    """Whether ``table`` exists; ConnectError naming the database's host:port (or file) and
    the server's reason, its URL's password hidden, when it cannot be reached (PostgreSQL
    within its 5 s connect timeout)."""
    try:
        with db.connect() as conn:
            return inspect(conn).has_table(table)
    except OperationalError as exc:
        url = db.url
        where = (
            url.database or "?"
            if url.get_backend_name() == "sqlite"
            else f"{url.host}:{url.port or 5432}"
        )
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        shown = redact_url(url.render_as_string(hide_password=False))
        raise ConnectError("database", f"{where} ({shown})", reason) from exc
