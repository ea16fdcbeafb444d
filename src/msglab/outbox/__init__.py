"""The transactional outbox: a message is stored in the outbox table in the same transaction as
the business change that causes it (``Outbox.add``), and a relay publishes stored messages to any
Publisher and marks them sent (``Relay``). Nothing is published for a transaction that rolled
back, and nothing committed is lost while the table lives."""

from msglab.outbox.relay import Relay
from msglab.outbox.table import OUTBOX, Outbox

__all__ = ["OUTBOX", "Outbox", "Relay"]
