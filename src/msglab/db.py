"""A SQLAlchemy engine for a database URL, as every part of msglab that keeps rows opens it."""

from __future__ import annotations

from msglab.extras import driver_import

with driver_import("postgres", __name__):
    from sqlalchemy import create_engine
    from sqlalchemy.engine import Engine


def engine(url: str) -> Engine:
    """An engine for ``url``; a ``postgresql://`` URL goes through psycopg 3. Connections are
    checked before use (a restarted server) and fail within 5 s when it is unreachable."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
