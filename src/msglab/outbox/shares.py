"""Key shares: which relay publishes which keys, so that several relays keep each key's order.

Every outbox row belongs to one of ``SHARDS`` key shares (``shard_of``: all rows of a key in
the same one). A relay owns a share while it holds PostgreSQL's session advisory lock on it,
on the connection it claims and marks through; only the owner claims a share's rows, so one
relay at a time publishes a key, in position order. The relays share the shares fairly: each
holds a member lock too, counts the members (``pg_locks``) and takes or gives back shares until
it owns ``ceil(SHARDS / members)``. A relay gives a share back only between passes (after its
marks committed), and a relay that dies loses its locks with its connection: the others take
its shares at their next rebalance (``rebalance_s``) and publish its unmarked rows again, in
order, before anything newer of those keys.

Relays with different ``topics`` filters are different groups (the lock keys include the
filter), so they never wait for each other's shares: give the relays of one table the same
filter or disjoint ones. Overlapping filters (one relay for every topic, another for
``orders``) would both publish ``orders``, each in order, the two interleaved.

The fence is PostgreSQL's view of the connection: a relay cut off from PostgreSQL but not from
the broker keeps publishing what it claimed until its pass ends, while PostgreSQL (after TCP
keepalive gives up on it) hands its shares on. Its marks then fail, and what it published comes
again: duplicates, never a loss.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Sequence

from msglab.extras import driver_import
from msglab.outbox.table import SHARDS

with driver_import("sqlite", __name__):
    from sqlalchemy import text
    from sqlalchemy.engine import Connection

_MEMBERS = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid = CAST(:ns AS oid) AND objsubid = 2"
)
_TAKE = text(
    "SELECT s FROM unnest(CAST(:candidates AS int[])) AS s "
    "WHERE pg_try_advisory_lock(:ns, s) LIMIT :need"
)
_GIVE = text("SELECT pg_advisory_unlock(:ns, s) FROM unnest(CAST(:shares AS int[])) AS s")


def _lock_space(name: str) -> int:
    """A positive int4 naming a lock space (the first key of a two-key advisory lock)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


class KeyShares:
    """The key shares one relay owns (``owned``), through its claiming connection's locks."""

    def __init__(self, topics: Sequence[str] | None, rebalance_s: float = 1.0) -> None:
        scope = ",".join(sorted(topics)) if topics is not None else "*"
        self._shares = _lock_space(f"msglab_outbox shares {scope}")
        self._members = _lock_space(f"msglab_outbox members {scope}")
        self.rebalance_s = rebalance_s
        self.owned: set[int] = set()
        self._joined = False
        self._first = os.getpid() % SHARDS  # where this relay starts looking for free shares

    def lost(self) -> None:
        """The connection is gone, and its locks with it: nothing is owned any more."""
        self.owned.clear()
        self._joined = False

    def rebalance(self, conn: Connection) -> set[int]:
        """Join the members (once per connection), then take free shares up to a fair count or
        give back those above it; the shares owned. Commits ``conn``: call it between passes."""
        if not self._joined:
            conn.execute(
                text("SELECT pg_advisory_lock(:ns, pg_backend_pid())"), {"ns": self._members}
            )
            self._joined = True
        members = max(int(conn.execute(_MEMBERS, {"ns": self._members}).scalar_one()), 1)
        fair = math.ceil(SHARDS / members)
        if len(self.owned) > fair:
            extra = sorted(self.owned)[fair:]
            conn.execute(_GIVE, {"ns": self._shares, "shares": extra})
            self.owned.difference_update(extra)
        elif len(self.owned) < fair:
            order = [(self._first + i) % SHARDS for i in range(SHARDS)]
            candidates = [s for s in order if s not in self.owned]
            params = {"ns": self._shares, "candidates": candidates, "need": fair - len(self.owned)}
            self.owned.update(conn.execute(_TAKE, params).scalars())
        conn.commit()
        return self.owned
