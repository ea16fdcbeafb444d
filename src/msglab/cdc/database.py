"""The PostgreSQL side of a Debezium connector: what it needs before it starts, and its
replication slot (state, lag, retained WAL, drop).

The one module of ``msglab.cdc`` that talks to PostgreSQL (SQLAlchemy through ``msglab.db``);
the rest speaks Kafka Connect's REST API only. Each check raises one line that says what to do:
UsageError (exit 2) for a database that cannot work as given (``wal_level`` not ``logical``, a
user without REPLICATION, a missing table or one without a primary key, a slot another
connection holds); ConnectError naming host:port (password hidden) when PostgreSQL does not
answer within the connect timeout (5 s, ``msglab.db.engine``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from msglab.config import redact_url
from msglab.db import engine
from msglab.errors import ConnectError, UsageError
from msglab.extras import driver_import

with driver_import("postgres", __name__):
    from sqlalchemy import text
    from sqlalchemy.engine import Connection
    from sqlalchemy.exc import DBAPIError

NAME = "postgresql"
LIST_AT_MOST = 15  # tables named when the one asked for does not exist


@contextmanager
def connected(url: str) -> Iterator[Connection]:
    """A connection to ``url``; ConnectError naming host:port when PostgreSQL does not
    answer (or refuses the login) within the connect timeout."""
    db = engine(url)
    try:
        try:
            conn = db.connect()
        except DBAPIError as exc:
            parts = urlsplit(url)
            address = f"{parts.hostname}:{parts.port or 5432}"
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise ConnectError(NAME, address, reason.replace(url, redact_url(url))) from exc
        with conn:
            yield conn
    finally:
        db.dispose()


def check_source(url: str, table: str) -> None:
    """Raise UsageError unless a Debezium connector can stream ``table`` (``schema.table``)
    from ``url``: ``wal_level`` is ``logical``, the user has REPLICATION (or is a superuser),
    the table exists and has a primary key."""
    with connected(url) as conn:
        wal_level = conn.execute(text("SELECT current_setting('wal_level')")).scalar_one()
        user, replication = conn.execute(
            text("SELECT rolname, rolreplication OR rolsuper FROM pg_roles "
                 "WHERE rolname = current_user")
        ).one()  # fmt: skip
        exists = conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar()
        keyed = exists and conn.execute(
            text("SELECT count(*) FROM pg_index WHERE indrelid = to_regclass(:t) "
                 "AND indisprimary"), {"t": table}
        ).scalar_one()  # fmt: skip
        tables = [] if exists else list(
            conn.execute(
                text("SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname "
                     "NOT IN ('pg_catalog', 'information_schema') ORDER BY 1 LIMIT :n"),
                {"n": LIST_AT_MOST + 1},
            ).scalars()
        )  # fmt: skip
    where = redact_url(url)
    if wal_level != "logical":
        raise UsageError(
            f"PostgreSQL at {where} has wal_level={wal_level}; logical decoding needs "
            "wal_level=logical: run ALTER SYSTEM SET wal_level = logical as a superuser (or "
            "start it with -c wal_level=logical), then restart PostgreSQL"
        )
    if not replication:
        raise UsageError(
            f"user {user} at {where} lacks the REPLICATION attribute a replication slot needs: "
            f"run ALTER ROLE {user} REPLICATION as a superuser, or connect as a user with it"
        )
    if not exists:
        shown = ", ".join(tables[:LIST_AT_MOST]) + (" ..." if len(tables) > LIST_AT_MOST else "")
        raise UsageError(f"table {table} does not exist at {where}; tables: {shown or 'none'}")
    if not keyed:
        raise UsageError(
            f"table {table} has no primary key: a change's message id is "
            "<table>:<lsn>:<primary key>; add one (ALTER TABLE ... ADD PRIMARY KEY)"
        )


@dataclass(frozen=True)
class Slot:
    """A replication slot. ``lag_bytes``: WAL written since the connector last confirmed
    (``pg_current_wal_lsn() - confirmed_flush_lsn``); ``retained_bytes``: WAL the server
    keeps for it (``pg_current_wal_lsn() - restart_lsn``). ``active_pid``: the connection
    reading it (the connector's task), None when nobody reads it."""

    name: str
    active: bool
    active_pid: int | None
    lag_bytes: int | None
    retained_bytes: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_SLOTS = text(
    "SELECT slot_name, active, active_pid, "
    "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, "
    "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
    "FROM pg_replication_slots WHERE slot_name = ANY(:names)"
)


def slots(url: str, names: list[str]) -> dict[str, Slot]:
    """The slots of ``names`` that exist, by name."""
    with connected(url) as conn:
        rows = conn.execute(_SLOTS, {"names": names}).all()
    return {r[0]: Slot(r[0], bool(r[1]), r[2], r[3], r[4]) for r in rows}


def check_slot_free(url: str, slot: str) -> None:
    """UsageError when another connection reads ``slot`` (a connector of another name, or
    any other client): a second reader would fail with "replication slot is active"."""
    with connected(url) as conn:
        row = conn.execute(
            text("SELECT s.active_pid, a.application_name, a.client_addr::text "
                 "FROM pg_replication_slots s LEFT JOIN pg_stat_activity a "
                 "ON a.pid = s.active_pid WHERE s.slot_name = :s AND s.active"),
            {"s": slot},
        ).first()  # fmt: skip
    if row is not None:
        pid, app, addr = row
        who = ", ".join(x for x in (f"pid {pid}", app and f"application {app}", addr) if x)
        raise UsageError(
            f"replication slot {slot} is in use by another connection ({who}): give this "
            "connector another slot (--slot), or delete the connector that reads it"
        )


IN_USE = "55006"
"""SQLSTATE object_in_use: a replication slot another connection reads."""


def drop_slot(url: str, slot: str, wait_s: float = 15.0) -> bool:
    """Drop ``slot`` once nobody reads it (a deleted connector's task lets go within
    seconds); False when it does not exist. UsageError when it is still read after
    ``wait_s``, or at once when PostgreSQL refuses the drop for another reason (a user who
    may not drop it), with that reason."""
    deadline = time.monotonic() + wait_s
    with connected(url) as conn:
        while True:
            active = conn.execute(
                text("SELECT active FROM pg_replication_slots WHERE slot_name = :s"), {"s": slot}
            ).scalar()
            conn.rollback()  # a fresh snapshot for the next look
            if active is None:
                return False
            if not active:
                try:
                    conn.execute(text("SELECT pg_drop_replication_slot(:s)"), {"s": slot})
                    conn.commit()
                    return True
                except DBAPIError as exc:
                    conn.rollback()
                    if getattr(exc.orig, "sqlstate", None) != IN_USE:  # e.g. no privilege
                        reason = str(exc.orig).strip().splitlines()[0]
                        raise UsageError(f"cannot drop replication slot {slot}: {reason}") from exc
                    # a reader took it between the look and the drop: look again
            if time.monotonic() > deadline:
                raise UsageError(
                    f"replication slot {slot} is still in use after {wait_s:.0f}s: drop it "
                    f"when its reader stopped: SELECT pg_drop_replication_slot('{slot}')"
                )
            time.sleep(0.3)
