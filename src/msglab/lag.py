"""How far a consumer group is behind on a topic: one ``Lag`` per partition (or queue).

The numbers mean the same on every transport where the transport can know them; where it
cannot, they are None and ``note`` says why. Each transport states in its ``lag`` method how
its broker's figures map onto these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Lag:
    """One part of a group's backlog on a topic.

    partition: where it is counted (a Kafka partition's number, a RabbitMQ queue, a stream,
        the files transport's batches).
    backlog: messages stored for the group and not acked by it yet: ``ready`` plus
        ``unacked`` (Kafka: the end offset minus the committed offset). None: unknown.
    ready: of those, messages not handed to any member yet. None: the broker cannot tell
        them from the unacked ones.
    unacked: handed to a member, not acked yet (they come again if it dies). None: unknown.
    details: the broker's own figures behind these (offsets, consumers, batches).
    note: what the numbers mean here, or why one is unknown.
    """

    partition: str
    backlog: int | None
    ready: int | None = None
    unacked: int | None = None
    details: Mapping[str, int | str] = field(default_factory=dict)
    note: str = ""

    @property
    def lag(self) -> int | None:
        """The best single figure (what ``msglab_consumer_lag`` exports): ``backlog``, else
        ``ready`` (a lower bound when the unacked ones are unknown)."""
        return self.backlog if self.backlog is not None else self.ready

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "lag": self.lag,
            "backlog": self.backlog,
            "ready": self.ready,
            "unacked": self.unacked,
            "details": dict(self.details),
            "note": self.note,
        }


def total(lags: Sequence[Lag]) -> int | None:
    """The summed ``lag`` of every part; None when one is unknown."""
    figures = [lag.lag for lag in lags]
    if any(f is None for f in figures):
        return None
    return sum(f for f in figures if f is not None)
