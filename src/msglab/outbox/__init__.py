"""The transactional outbox: a message is stored in the outbox table in the same transaction as
the business change that causes it (``Outbox.add``), and a relay publishes stored messages to any
Publisher and marks them sent (``Relay``). Nothing is published for a transaction that rolled
back, and nothing committed is lost while the table lives. PostgreSQL (several relays, in order
per key; wake on commit) or SQLite (one writer; the relay polls)."""

from msglab.outbox.relay import Relay, RelayStats
from msglab.outbox.store import Backlog
from msglab.outbox.table import OUTBOX, SHARDS, Outbox, shard_of

__all__ = ["OUTBOX", "SHARDS", "Backlog", "Outbox", "Relay", "RelayStats", "shard_of"]
