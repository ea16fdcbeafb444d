"""The observer interface the runtime and the built-in middleware report to, so a metrics
exporter (Prometheus, logs, a test's counter) plugs in without the runtime knowing it.

Every call names the topic, the consumer group and the handler; ``count`` is how many messages
the event concerns (a batch handler's messages). Calls come from the consumer's threads and
must not block or raise; the default ``NO_OBSERVER`` does nothing.
"""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    def received(self, topic: str, group: str, handler: str, count: int) -> None:
        """Messages handed to the handler chain (every attempt)."""

    def processed(self, topic: str, group: str, handler: str, count: int, seconds: float) -> None:
        """The handler returned after ``seconds``."""

    def failed(
        self, topic: str, group: str, handler: str, count: int, seconds: float, error: str
    ) -> None:
        """The handler raised ``error`` (its type name) after ``seconds``."""

    def retried(self, topic: str, group: str, handler: str, count: int, attempt: int) -> None:
        """Messages put on the retry flow for their attempt number ``attempt``."""

    def dead_lettered(self, topic: str, group: str, handler: str, count: int) -> None:
        """Messages put in the dead-letter place."""

    def dedup_skipped(self, topic: str, group: str, handler: str, count: int) -> None:
        """Messages the idempotent middleware found applied before (their effect skipped)."""


class NoObserver:
    """Ignores every event."""

    def received(self, topic: str, group: str, handler: str, count: int) -> None:
        pass

    def processed(self, topic: str, group: str, handler: str, count: int, seconds: float) -> None:
        pass

    def failed(
        self, topic: str, group: str, handler: str, count: int, seconds: float, error: str
    ) -> None:
        pass

    def retried(self, topic: str, group: str, handler: str, count: int, attempt: int) -> None:
        pass

    def dead_lettered(self, topic: str, group: str, handler: str, count: int) -> None:
        pass

    def dedup_skipped(self, topic: str, group: str, handler: str, count: int) -> None:
        pass


NO_OBSERVER: Observer = NoObserver()
