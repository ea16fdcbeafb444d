"""Wake on commit: ``LISTEN`` to the outbox's channel on a connection of its own.

``Outbox.add`` notifies ``CHANNEL`` inside the writer's transaction; PostgreSQL delivers the
notification when (and only if) that transaction commits, so a relay waiting here wakes within
a round trip of the commit instead of at its next poll. A listener is a hint, never the only
way in: the relay still polls (less often), and a listener whose connection failed falls back
to that poll until it reconnects.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from msglab.extras import driver_import
from msglab.outbox.table import CHANNEL

with driver_import("postgres", __name__):
    import psycopg
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

RECONNECT_S = 5.0
"""How long a listener whose connection failed waits before it listens again."""


class Listener:
    """Waits for commits that added outbox rows (PostgreSQL only)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Any = None
        self._retry_at = 0.0
        self._listen()

    def _listen(self) -> None:
        try:
            raw = self._engine.raw_connection()
            conn = raw.driver_connection
            raw.detach()  # ours for good: the pool neither reuses nor resets it
            if not isinstance(conn, psycopg.Connection):
                raise TypeError(f"not a psycopg connection: {conn!r}")
            conn.autocommit = True
            conn.execute(f"LISTEN {CHANNEL}")
            self._conn = conn
        except Exception as exc:  # the relay's own passes report the database's state
            log.warning("outbox listener could not listen (polling instead): %s", exc)
            self._conn = None
            self._retry_at = time.monotonic() + RECONNECT_S

    def wait(self, timeout_s: float) -> bool:
        """Return when a commit added rows (True) or after ``timeout_s`` (False)."""
        if self._conn is None:
            if time.monotonic() >= self._retry_at:
                self._listen()
            if self._conn is None:
                time.sleep(timeout_s)
                return False
        try:
            for _ in self._conn.notifies(timeout=timeout_s, stop_after=1):
                return True
            return False
        except psycopg.Error as exc:
            log.warning("outbox listener lost its connection (polling instead): %s", exc)
            self.close()
            self._retry_at = time.monotonic() + RECONNECT_S
            return False

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
