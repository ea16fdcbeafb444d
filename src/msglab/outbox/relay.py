"""The relay: claim the oldest unsent outbox rows, publish them, mark them sent.

One pass (``run_once``) is one transaction: ``SELECT ... WHERE sent_at IS NULL ORDER BY
position LIMIT n FOR UPDATE SKIP LOCKED``, publish (grouped by topic, in position order), then
``UPDATE ... SET sent_at = now()`` for what the publisher confirmed, and commit. The row locks
keep a second relay off the same rows (it takes the next ones; per-key order then holds only
with one relay per table).

The order of publish and mark is the delivery promise:

* mark after the confirm (the default, at-least-once): a relay that dies between the publish
  and the commit of its mark leaves the rows unsent, and the next pass publishes them again: at
  most one batch of duplicates per crash (consumers dedup by message id).
* mark before publish (``mark_first=True``, at-most-once): the mark commits first; a relay
  that dies before the publish is done loses that batch, and nothing is ever sent twice.

Messages the publisher did not confirm (``PublishError``) stay unsent and are tried again in
the next pass; a broker or database that is away is waited for (``backoff``), never skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from msglab.config import Backoff
from msglab.errors import PublishError, TransportError
from msglab.extras import driver_import
from msglab.message import Message
from msglab.ports import Publisher

with driver_import("postgres", __name__):
    from sqlalchemy import text
    from sqlalchemy.engine import Connection, Engine, Row
    from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

_CLAIM = text(
    "SELECT position, id, topic, key, headers, payload FROM msglab_outbox "
    "WHERE sent_at IS NULL AND (CAST(:topics AS text[]) IS NULL OR topic = ANY(:topics)) "
    "ORDER BY position LIMIT :limit FOR UPDATE SKIP LOCKED"
)
_MARK = text("UPDATE msglab_outbox SET sent_at = now() WHERE position = ANY(:positions)")


@dataclass
class RelayStats:
    passes: int = 0
    published: int = 0  # messages the publisher confirmed (again, after a crash)
    unconfirmed: int = 0  # messages left unsent by a PublishError, tried again
    errors: int = 0  # passes that failed on the database or the broker


class Relay:
    """Publishes the outbox table's unsent rows through ``publisher``.

    batch_size: rows per pass (and the most duplicates one crash can cause).
    poll_s: the wait after a pass that found fewer than ``batch_size`` rows.
    topics: relay only these topics' rows (None: every row of the table).
    midway: called between a pass's two steps with the batch's ids (after the publish, with
        the confirmed ids, and before the mark; with ``mark_first``, after the mark and before
        the publish): for observation, and where the lab's relay-kill strikes.
    """

    def __init__(
        self,
        engine: Engine,
        publisher: Publisher,
        batch_size: int = 500,
        poll_s: float = 0.05,
        mark_first: bool = False,
        topics: Sequence[str] | None = None,
        backoff: Backoff | None = None,
        midway: Callable[[list[str]], None] | None = None,
    ) -> None:
        if batch_size < 1 or poll_s <= 0:
            raise ValueError("batch_size must be at least 1 and poll_s positive")
        self._engine = engine
        self._publisher = publisher
        self.batch_size = batch_size
        self._poll_s = poll_s
        self._mark_first = mark_first
        self._topics = list(topics) if topics is not None else None
        self._backoff = backoff or Backoff(attempts=8, first_s=0.2, max_s=2.0)
        self._midway = midway
        self.stats = RelayStats()

    def run_once(self) -> int:
        """One pass; how many rows it claimed (0: nothing unsent). Raises TransportError or
        sqlalchemy's OperationalError when the broker or the database is away: nothing it
        claimed was marked (unless ``mark_first``)."""
        self.stats.passes += 1
        with self._engine.connect() as conn:
            if self._mark_first:
                with conn.begin():
                    rows = self._claim(conn)
                    self._mark(conn, [r.position for r in rows])
                if rows:
                    if self._midway is not None:
                        self._midway([r.id for r in rows])
                    self._publish(rows)
                return len(rows)
            with conn.begin():  # the row locks are held until the mark commits
                rows = self._claim(conn)
                if rows:
                    confirmed = self._publish(rows)
                    if self._midway is not None:
                        self._midway(sorted(confirmed))
                    self._mark(conn, [r.position for r in rows if r.id in confirmed])
            return len(rows)

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until ``stop`` is set; waits ``poll_s`` when the table is drained,
        backs off while the database or broker is away."""
        failures = 0
        delays = self._backoff.delays()
        while not stop.is_set():
            try:
                claimed = self.run_once()
                failures = 0
            except (OperationalError, TransportError) as exc:
                self.stats.errors += 1
                log.warning("outbox relay pass failed, retrying: %s", exc)
                stop.wait(delays[min(failures, len(delays) - 1)])
                failures += 1
                continue
            if claimed < self.batch_size:
                stop.wait(self._poll_s)

    def _publish(self, rows: Sequence[Row[Any]]) -> set[str]:
        """Publish per topic in position order; the ids confirmed."""
        by_topic: dict[str, list[Message]] = {}
        for r in rows:
            by_topic.setdefault(r.topic, []).append(
                Message(bytes(r.payload), r.key, r.headers, r.id)
            )
        confirmed: set[str] = set()
        for topic, messages in by_topic.items():
            try:
                self._publisher.publish(topic, messages)
                done = [m.id for m in messages]
            except PublishError as exc:
                left = set(exc.failed) | set(exc.unknown)
                done = [m.id for m in messages if m.id not in left]
                self.stats.unconfirmed += len(left)
            confirmed.update(done)
            self.stats.published += len(done)
        return confirmed

    def _claim(self, conn: Connection) -> Sequence[Row[Any]]:
        return conn.execute(_CLAIM, {"limit": self.batch_size, "topics": self._topics}).all()

    @staticmethod
    def _mark(conn: Connection, positions: list[int]) -> None:
        if positions:
            conn.execute(_MARK, {"positions": positions})

    def purge(self, keep_s: float) -> int:
        """Delete rows sent more than ``keep_s`` seconds ago; how many."""
        with self._engine.begin() as conn:
            result = conn.execute(
                text("DELETE FROM msglab_outbox WHERE sent_at < now() - make_interval(secs => :s)"),
                {"s": keep_s},
            )
            return result.rowcount
