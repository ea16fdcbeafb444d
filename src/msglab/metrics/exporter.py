"""The Prometheus exporter: ``Metrics``, the observer a consumer runtime calls, on its own
``CollectorRegistry`` (two Metrics in one process never share a series), served by
``prometheus_client``'s HTTP server.

Series (labels ``topic``, ``group``, ``transport`` unless said otherwise):

    msglab_messages_received_total        deliveries handed to the handler chain
    msglab_messages_processed_total       handled and acked
    msglab_messages_failed_total          the handler raised (each attempt)
    msglab_messages_retried_total         given back for another attempt
    msglab_messages_dead_lettered_total   given up on and sent to the dead-letter topic
    msglab_messages_dedup_skipped_total   skipped as already processed (idempotent consumer)
    msglab_handler_duration_seconds       histogram of the handler's run time
    msglab_consumer_lag                   gauge per partition (+ label ``partition``): the
                                          group's ``Lag.lag``, set by the lag poller
    msglab_messages_in_flight             gauge, no labels: received and not yet settled

Every method is thread-safe and cheap (a lock and an add), so a runtime may call them on its
hot path; the counters take ``n``, the messages of a batch handler's call.
``observer.MetricsObserver`` adapts the consumer runtime's ``Observer`` callbacks to these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from msglab.errors import UsageError
from msglab.extras import driver_import
from msglab.metrics.observer import MetricsObserver
from msglab.metrics.poller import LagPoller
from msglab.ports import LagReader, Transport

with driver_import("metrics", __name__):
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
        start_http_server,
    )
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LABELS = ("topic", "group", "transport")
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Handler run times from a millisecond (an in-memory effect) to 30 s (a slow downstream)."""

COUNTERS = {
    "received": "Deliveries handed to the handler chain.",
    "processed": "Messages handled and acked.",
    "failed": "Handler attempts that raised.",
    "retried": "Messages given back for another attempt.",
    "dead_lettered": "Messages given up on and sent to the dead-letter topic.",
    "dedup_skipped": "Messages skipped as already processed (idempotent consumer).",
}


@dataclass(frozen=True)
class Served:
    """The HTTP server of a ``Metrics.serve`` call: its ``port`` (the one chosen when 0 was
    asked for) and ``close()``, which stops it (idempotent)."""

    port: int
    _server: Any

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Metrics:
    """msglab's consumer series on a registry of their own (``registry``)."""

    def __init__(self, buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        self.registry = CollectorRegistry()
        self._counters = {
            name: Counter(f"msglab_messages_{name}", text, LABELS, registry=self.registry)
            for name, text in COUNTERS.items()
        }
        self._duration = Histogram(
            "msglab_handler_duration_seconds",
            "Run time of the handler, per call.",
            LABELS,
            buckets=tuple(buckets),
            registry=self.registry,
        )
        self._lag = Gauge(
            "msglab_consumer_lag",
            "Messages of the partition the group has not acked (msglab.lag.Lag.lag).",
            (*LABELS, "partition"),
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str, str], Any] = {}
        self._in_flight = Gauge(
            "msglab_messages_in_flight",
            "Deliveries received and not settled yet.",
            registry=self.registry,
        )

    def _series(self, name: str, topic: str, group: str, transport: str) -> Any:
        """The child of metric ``name`` for these labels, looked up once (``labels()`` costs
        3.5 us a call, measured: three a message were a third of a per-message handler's cost
        in the runtime)."""
        key = (name, topic, group, transport)
        child = self._children.get(key)
        if child is None:
            metric = self._duration if name == "duration" else self._counters[name]
            child = self._children.setdefault(key, metric.labels(topic, group, transport))
        return child

    def received(self, topic: str, group: str, transport: str, n: int = 1) -> None:
        self._series("received", topic, group, transport).inc(n)

    def processed(self, topic: str, group: str, transport: str, n: int = 1) -> None:
        self._series("processed", topic, group, transport).inc(n)

    def failed(self, topic: str, group: str, transport: str, n: int = 1) -> None:
        self._series("failed", topic, group, transport).inc(n)

    def retried(self, topic: str, group: str, transport: str, n: int = 1) -> None:
        self._series("retried", topic, group, transport).inc(n)

    def dead_lettered(self, topic: str, group: str, transport: str, n: int = 1) -> None:
        self._series("dead_lettered", topic, group, transport).inc(n)

    def dedup_skipped(self, topic: str, group: str, transport: str, n: int = 1) -> None:
        self._series("dedup_skipped", topic, group, transport).inc(n)

    def duration(self, topic: str, group: str, transport: str, seconds: float) -> None:
        """One handler call of ``seconds`` (a batch handler's call counts once)."""
        self._series("duration", topic, group, transport).observe(seconds)

    def in_flight(self, delta: int) -> None:
        """``+1`` when a delivery is received, ``-1`` when it is settled (acked or nacked)."""
        self._in_flight.inc(delta)

    def lag(
        self, topic: str, group: str, transport: str, partition: str, value: int | None
    ) -> None:
        """The group's lag on one partition; None (unknown) removes the series, so a stale
        figure is never shown as current."""
        labels = (topic, group, transport, partition)
        if value is not None:
            self._lag.labels(*labels).set(value)
            return
        with contextlib.suppress(KeyError):  # never set
            self._lag.remove(*labels)

    def render(self) -> bytes:
        """The text a scrape gets (Prometheus exposition format 0.0.4)."""
        return bytes(generate_latest(self.registry))

    def serve(self, port: int, addr: str = "127.0.0.1") -> Served:
        """Serve ``/metrics`` on ``addr:port`` from a daemon thread (0: a free port, see
        ``Served.port``). Loopback by default: pass ``0.0.0.0`` for a Prometheus elsewhere.
        UsageError when the port cannot be bound."""
        try:
            server, _thread = start_http_server(port, addr, registry=self.registry)
        except OSError as exc:
            raise UsageError(f"metrics: cannot serve on {addr}:{port}: {exc.strerror}") from exc
        return Served(int(server.server_port), server)


@dataclass(frozen=True)
class Exporting:
    """What ``export`` started: ``metrics``, an observer per transport (``observer(name)``;
    hand it to the runtime), the HTTP server (``served.port``) and a lag poller per transport
    that stores messages. ``close()`` stops the pollers, then the server."""

    metrics: Metrics
    served: Served
    pollers: tuple[LagPoller, ...]

    def observer(self, transport: str) -> MetricsObserver:
        return MetricsObserver(self.metrics, transport)

    def close(self) -> None:
        for poller in self.pollers:
            poller.stop()
        self.served.close()


def export(
    port: int,
    consumers: Iterable[tuple[Transport, str, str]],
    every_s: float = 5.0,
    addr: str = "127.0.0.1",
) -> Exporting:
    """Consumers' metrics served on ``addr:port`` (what ``msglab worker --metrics-port``
    runs), with the lag of each consumer ((transport, topic, group)) polled every ``every_s``
    s where its transport can read lag. UsageError when the port cannot be bound."""
    metrics = Metrics()
    served = metrics.serve(port, addr)
    targets: dict[str, list[tuple[str, str]]] = {}
    readers: dict[str, Transport] = {}
    for transport, topic, group in consumers:
        if isinstance(transport, LagReader):
            readers.setdefault(transport.name, transport)
            targets.setdefault(transport.name, []).append((topic, group))
    pollers = tuple(LagPoller(t, targets[n], metrics, every_s) for n, t in readers.items())
    for poller in pollers:
        poller.start()
    return Exporting(metrics, served, pollers)


RELAY_COUNTERS = {
    "passes": "Relay passes (claim, publish, mark).",
    "published": "Outbox rows the broker confirmed (again, after a crash).",
    "unconfirmed": "Outbox rows the broker did not confirm, left unsent and tried again.",
    "held": "Confirmed rows behind an unconfirmed row of their key, published again after it.",
    "errors": "Relay passes that failed on the database or the broker.",
    "purged": "Sent rows deleted by the retention.",
}


class _RelayCollector:
    """Reads the relays' counters and the outbox's backlog when scraped (nothing on the
    relays' hot path)."""

    def __init__(self, relays: Sequence[Any], backlog: Callable[[], Any]) -> None:
        self._relays = relays
        self._backlog = backlog

    def collect(self) -> Iterator[Any]:
        for name, doc in RELAY_COUNTERS.items():
            family = CounterMetricFamily(f"msglab_relay_{name}", doc, labels=["relay"])
            for i, relay in enumerate(self._relays):
                family.add_metric([str(i)], getattr(relay.stats, name))
            yield family
        shares = GaugeMetricFamily(
            "msglab_relay_key_shares", "Key shares this relay owns.", labels=["relay"]
        )
        for i, relay in enumerate(self._relays):
            if relay.shares is not None:
                shares.add_metric([str(i)], len(relay.shares.owned))
        yield shares
        try:
            backlog = self._backlog()
        except Exception:  # the database is away: no backlog in this scrape, the errors count
            return
        yield GaugeMetricFamily("msglab_outbox_unsent", "Unsent outbox rows.", value=backlog.unsent)
        yield GaugeMetricFamily(
            "msglab_outbox_oldest_unsent_seconds",
            "How long the oldest unsent outbox row has waited.",
            value=backlog.oldest_s,
        )


def export_relays(
    port: int, relays: Sequence[Any], backlog: Callable[[], Any], addr: str = "127.0.0.1"
) -> Served:
    """Outbox relays' metrics served on ``addr:port`` (what ``msglab relay --metrics-port``
    runs): ``msglab_relay_<counter>_total`` per relay (``RELAY_COUNTERS``), the key shares each
    owns, and ``msglab_outbox_unsent`` / ``msglab_outbox_oldest_unsent_seconds`` from
    ``backlog()`` (a query at each scrape). ``relays``: objects with ``stats`` and ``shares``
    (``msglab.outbox.Relay``). UsageError when the port cannot be bound."""
    registry = CollectorRegistry()
    registry.register(_RelayCollector(relays, backlog))
    try:
        server, _thread = start_http_server(port, addr, registry=registry)
    except OSError as exc:
        raise UsageError(f"metrics: cannot serve on {addr}:{port}: {exc.strerror}") from exc
    return Served(int(server.server_port), server)
