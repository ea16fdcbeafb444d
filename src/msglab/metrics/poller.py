"""The lag poller: every ``every_s`` seconds, the lag of each (topic, group) a consumer serves,
read through the transport's ``LagReader`` capability, handed to a ``LagSink`` (``Metrics``).

``poll_once()`` is the unit under test: it reads every target once and returns how many
partitions it set; the thread around it only sleeps and repeats. A read that fails (the broker
down, the topic not created yet) is logged and leaves that target's series as they were: the
next poll tries again, and the consumer never stops for its metrics.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Protocol

from msglab.errors import MsglabError, UsageError
from msglab.ports import LagReader, Transport

LOG = logging.getLogger("msglab.metrics")


class LagSink(Protocol):
    """Where polled lag goes: ``Metrics.lag``. ``value`` None: unknown now."""

    def lag(
        self, topic: str, group: str, transport: str, partition: str, value: int | None
    ) -> None: ...


class LagPoller:
    """Polls ``targets`` ((topic, group) pairs) on ``transport`` every ``every_s`` seconds
    from a daemon thread between ``start()`` and ``stop()``. UsageError at once when the
    transport stores nothing and so has no lag (Redis pub/sub)."""

    def __init__(
        self,
        transport: Transport,
        targets: Iterable[tuple[str, str]],
        sink: LagSink,
        every_s: float = 5.0,
    ) -> None:
        if not isinstance(transport, LagReader):
            raise UsageError(f"{transport.name} stores nothing, so it has no lag to poll")
        if every_s <= 0:
            raise UsageError("the lag poll interval must be positive")
        self._reader: LagReader = transport
        self._name = transport.name
        self._targets = list(dict.fromkeys(targets))
        self._sink = sink
        self._every_s = every_s
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> int:
        """Read every target's lag once and set it; the number of partitions set."""
        updated = 0
        for topic, group in self._targets:
            try:
                lags = self._reader.lag(topic, group)
            except MsglabError as exc:
                LOG.warning("lag of %s on %s %s not read: %s", group, self._name, topic, exc)
                continue
            for lag in lags:
                self._sink.lag(topic, group, self._name, lag.partition, lag.lag)
                updated += 1
        return updated

    def start(self) -> None:
        """Poll now and then every ``every_s`` until ``stop()``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="msglab-lag")
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self.poll_once()
            self._stopped.wait(self._every_s)

    def stop(self) -> None:
        """Stop polling and wait for a poll under way (at most one lag read's timeouts)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
