"""External-call hygiene, measured through Toxiproxy on the real brokers.

* connect-timeout: each broker client (connect timeout 3 s) against its proxy with every byte
  dropped (a ``timeout`` toxic: the TCP connection opens, nothing answers): how long until the
  client gives up, and whether the error names host:port.
* circuit-breaker: a caller publishes one message to Redis Streams every 50 ms for 6 s (request
  timeout 1 s), through a ``CircuitBreaker(threshold=3, reset_s=1)``; the network is blackholed
  from 0.5 s to 3.5 s. Counted: calls that waited out a timeout, calls the open breaker refused
  at once (and how long a refusal took), and the breaker's transitions.
* lost-reply: one XADD to Redis Streams whose reply Toxiproxy cuts off (a ``limit_data`` toxic
  on the way back: the write arrives and runs, its answer does not come): the outcome is
  *unknown*; a reconciliation (a fresh group reads the stream) finds whether it was stored; a
  blind retry stores it again.
* bulkhead: 16 threads call a dependency slowed to 200 ms each way (a ``latency`` toxic on
  Redis) through a ``Bulkhead(limit=4)``: refused calls (503), the most calls inside at once,
  and the latency of the calls let in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from msglab.brokers import open_transport
from msglab.config import Backoff, ClientConfig
from msglab.errors import MsglabError, PublishError
from msglab.infra import backend_for, toxiproxy
from msglab.infra.toxics import Stream, ToxiproxyClient
from msglab.lab.checker import percentile
from msglab.message import Message
from msglab.ports import TopicAdmin, Transport
from msglab.profiles import DeliveryProfile
from msglab.resilience import BreakerOpen, Bulkhead, CircuitBreaker, OverCapacity
from msglab.settings import Settings

CONNECT_TIMEOUT_S = 3.0
BROKERS = {"kafka": "kafka", "rabbitmq": "rabbitmq", "redis-streams": "redis"}


def run(variant: str, settings: Settings, quick: bool) -> tuple[dict[str, Any], str]:
    services = ["redis", "toxiproxy"] if variant != "connect-timeout" else [*BROKERS.values()]
    backend_for(settings).up(list(dict.fromkeys([*services, "toxiproxy"])))
    toxiproxy.point_proxies(settings)
    proxies = toxiproxy.client(settings)
    return {
        "connect-timeout": _connect_timeout,
        "circuit-breaker": _circuit_breaker,
        "bulkhead": _bulkhead,
        "lost-reply": _lost_reply,
    }[variant](settings, proxies)


@contextmanager
def _toxic(
    proxies: ToxiproxyClient,
    service: str,
    kind: str,
    streams: tuple[Stream, ...] = ("upstream", "downstream"),
    **attributes: int,
) -> Iterator[None]:
    names = []
    try:
        for stream in streams:
            name = f"msglab-probe-{kind}-{stream}"
            if name in {t.name for t in proxies.proxy(service).toxics}:
                proxies.remove_toxic(service, name)
            proxies.add_toxic(service, name, kind, attributes, stream)
            names.append(name)
        yield
    finally:
        for name in names:
            proxies.remove_toxic(service, name)


def _config(settings: Settings, service: str, **extra: Any) -> ClientConfig:
    return ClientConfig(
        url=toxiproxy.proxied_url(settings, service),
        profile=DeliveryProfile.AT_LEAST_ONCE,
        connect_timeout_s=CONNECT_TIMEOUT_S,
        reconnect=Backoff(attempts=0),
        **extra,
    )


def _connect_timeout(settings: Settings, proxies: ToxiproxyClient) -> tuple[dict[str, Any], str]:
    figures: dict[str, Any] = {"connect_timeout_s": CONNECT_TIMEOUT_S}
    for transport, service in BROKERS.items():
        config = _config(settings, service, request_timeout_s=5.0)
        with _toxic(proxies, service, "timeout", timeout=0):
            began = time.monotonic()
            error = ""
            try:
                pub = open_transport(transport, config).publisher()
                pub.publish(f"probe-connect-{time.time_ns()}", [Message(b"x")])
                pub.close()
            except MsglabError as exc:
                error = str(exc)
            seconds = time.monotonic() - began
        address = config.url.split("://")[-1].split("/")[0].rsplit("@")[-1]  # host:port
        figures[transport] = {
            "seconds_to_fail": round(seconds, 3),
            "error": error or "no error: the call succeeded",
            "names_address": address in error,
        }
    measured = ", ".join(
        f"{t} {figures[t]['seconds_to_fail']:.1f} s" + ("" if figures[t]["names_address"] else "?")
        for t in BROKERS
    )
    return figures, f"unreachable broker fails after: {measured} (connect timeout 3 s)"


def _circuit_breaker(settings: Settings, proxies: ToxiproxyClient) -> tuple[dict[str, Any], str]:
    config = _config(settings, "redis", request_timeout_s=1.0)
    pub = open_transport("redis-streams", config).publisher()
    topic = f"probe-breaker-{time.time_ns()}"
    pub.publish(topic, [Message(b"warm")])
    breaker = CircuitBreaker(threshold=3, reset_s=1.0, failures=(MsglabError,))
    calls: list[tuple[float, str, float]] = []  # (start, outcome, seconds)
    began = time.monotonic()
    stop = threading.Event()

    def network() -> None:
        time.sleep(0.5)
        with _toxic(proxies, "redis", "timeout", timeout=0):
            stop.wait(3.0)

    outage = threading.Thread(target=network)
    outage.start()
    while time.monotonic() - began < 6.0:
        t0 = time.monotonic()
        try:
            breaker.call(lambda: pub.publish(topic, [Message(b"x")]))
            outcome = "ok"
        except BreakerOpen:
            outcome = "refused"
        except MsglabError:
            outcome = "failed"
        calls.append((t0 - began, outcome, time.monotonic() - t0))
        time.sleep(0.05)
    stop.set()
    outage.join()
    pub.close()
    by = {o: [s for _, oo, s in calls if oo == o] for o in ("ok", "failed", "refused")}
    figures = {
        "calls": len(calls),
        "ok": len(by["ok"]),
        "failed_after_waiting": len(by["failed"]),
        "refused_at_once": len(by["refused"]),
        "mean_failed_s": round(sum(by["failed"]) / max(1, len(by["failed"])), 3),
        "max_refused_ms": round(max(by["refused"], default=0.0) * 1000, 3),
        "transitions": [(round(t - began, 3), s) for t, s in breaker.transitions],
        "final_state": breaker.state,
        "raw_calls": [(round(t, 3), o, round(s, 4)) for t, o, s in calls],
    }
    measured = (
        f"{figures['failed_after_waiting']} calls waited {figures['mean_failed_s']:.1f} s each, "
        f"{figures['refused_at_once']} refused in <= {figures['max_refused_ms']:.2f} ms while "
        f"open, final state {figures['final_state']}"
    )
    return figures, measured


def _lost_reply(settings: Settings, proxies: ToxiproxyClient) -> tuple[dict[str, Any], str]:
    transport = open_transport("redis-streams", _config(settings, "redis", request_timeout_s=1.0))
    topic = f"probe-lost-reply-{time.time_ns()}"
    pub = transport.publisher()
    pub.publish(topic, [Message(b"warm")])  # connected, the stream exists
    order = Message(b"order", "k", id=f"{topic}-order")
    outcome = "ok"
    # msglab's Redis publisher PINGs first: its 7-byte PONG passes, then the connection is cut
    # inside the XADD's reply (Redis ran the XADD; the client never hears of it)
    with _toxic(proxies, "redis", "limit_data", streams=("downstream",), bytes=8):
        try:
            pub.publish(topic, [order])
        except PublishError as exc:
            outcome = "unknown" if order.id in exc.unknown else "fail"
        except MsglabError:
            outcome = "fail"
    pub.close()
    found = _copies(transport, topic, order.id)
    retry = transport.publisher()  # the caller that retries without looking
    retry.publish(topic, [order])
    retry.close()
    figures = {
        "outcome": outcome,
        "copies_found_on_reconcile": found,
        "copies_after_blind_retry": _copies(transport, topic, order.id),
    }
    measured = (
        f"outcome {outcome}; reconciliation found {found} stored cop"
        f"{'y' if found == 1 else 'ies'}; after a blind retry "
        f"{figures['copies_after_blind_retry']}"
    )
    if isinstance(transport, TopicAdmin):
        transport.delete_topic(topic, [])
    return figures, measured


def _copies(transport: Transport, topic: str, mid: str) -> int:
    """How many times ``mid`` is stored in the stream: read by a fresh group until idle."""
    sub = transport.subscriber(f"reconcile-{time.time_ns()}")
    sub.on_idle(sub.close)
    copies = 0
    for d in sub.subscribe(topic):
        copies += d.message.id == mid
        d.ack()
    return copies


def _bulkhead(settings: Settings, proxies: ToxiproxyClient) -> tuple[dict[str, Any], str]:
    config = _config(settings, "redis", request_timeout_s=5.0)
    transport = open_transport("redis-streams", config)
    topic = f"probe-bulkhead-{time.time_ns()}"
    bulkhead = Bulkhead(limit=4)
    latencies: list[float] = []
    lock = threading.Lock()

    def caller() -> None:
        pub = transport.publisher()
        for _ in range(10):
            t0 = time.monotonic()
            try:
                bulkhead.call(lambda: pub.publish(topic, [Message(b"x")]))
                with lock:
                    latencies.append(time.monotonic() - t0)
            except OverCapacity:
                time.sleep(0.05)  # a client told 503 backs off
        pub.close()

    with _toxic(proxies, "redis", "latency", latency=200):
        threads = [threading.Thread(target=caller) for _ in range(16)]
        _run_all(threads)
    latencies.sort()
    figures = {
        "callers": 16,
        "limit": bulkhead.limit,
        "accepted": len(latencies),
        "refused_503": bulkhead.refused,
        "peak_inside": bulkhead.peak,
        "accepted_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "accepted_max_ms": round(max(latencies, default=0.0) * 1000, 1),
    }
    measured = (
        f"{figures['refused_503']} calls refused (503), at most {figures['peak_inside']} of "
        f"{bulkhead.limit} inside, accepted p50 {figures['accepted_p50_ms']:.0f} ms"
    )
    return figures, measured


def _run_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join()
