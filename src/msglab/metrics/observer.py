"""``MetricsObserver``: the consumer runtime's observer (``msglab.app``'s ``Observer``
callbacks: topic, group, handler, count, ...) turned into ``Metrics`` calls, labelled with the
transport the runtime consumes from.

Mapping: ``received`` counts received and raises in-flight by ``count``; ``processed`` and
``failed`` count themselves, observe the handler's ``seconds`` once per call and lower
in-flight again; ``retried``, ``dead_lettered`` and ``dedup_skipped`` count themselves. The
handler's name is not a label (the series are per topic, group and transport, as
``msglab_messages_processed_total{topic,group,transport}``). Like any observer it never
blocks and never raises into the consumer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from msglab.metrics.exporter import Metrics


class MetricsObserver:
    """Reports a runtime's events on ``transport`` to ``metrics``."""

    def __init__(self, metrics: Metrics, transport: str) -> None:
        self.metrics = metrics
        self.transport = transport

    def received(self, topic: str, group: str, handler: str, count: int) -> None:
        self.metrics.received(topic, group, self.transport, count)
        self.metrics.in_flight(count)

    def processed(self, topic: str, group: str, handler: str, count: int, seconds: float) -> None:
        self.metrics.processed(topic, group, self.transport, count)
        self.metrics.duration(topic, group, self.transport, seconds)
        self.metrics.in_flight(-count)

    def failed(
        self, topic: str, group: str, handler: str, count: int, seconds: float, error: str
    ) -> None:
        self.metrics.failed(topic, group, self.transport, count)
        self.metrics.duration(topic, group, self.transport, seconds)
        self.metrics.in_flight(-count)

    def retried(self, topic: str, group: str, handler: str, count: int, attempt: int) -> None:
        self.metrics.retried(topic, group, self.transport, count)

    def dead_lettered(self, topic: str, group: str, handler: str, count: int) -> None:
        self.metrics.dead_lettered(topic, group, self.transport, count)

    def dedup_skipped(self, topic: str, group: str, handler: str, count: int) -> None:
        self.metrics.dedup_skipped(topic, group, self.transport, count)
