"""The runtime: runs an App's consumers (each a ``ConsumerRunner``) until stopped.

    runtime = Runtime(app, connect)      # connect(transport name, profile) -> Transport
    runtime.start()
    ...
    runtime.stop(grace_s=10)             # stop fetching, let handlers finish, settle, close

``connect`` is where the composition root (``msglab worker``, a test) says where each
transport's broker is; one transport object is made per (name, profile) and shared. ``only``
names the handlers to run (all by default); ``concurrency`` sets every per-message handler's
threads (``msglab worker --concurrency``; not an exactly-once consumer's); ``instance``
names this process among a group's exactly-once consumers (``msglab worker --instance``). A
handler's chain is composed once, at start.
``observer_for``: each consumer's observer (``msglab worker --metrics-port``: one labelled with
its transport), instead of the App's; it also wraps each handler in the metrics middleware,
innermost, so that every call is counted whatever the App lists.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from msglab.app.application import App, ConsumerSpec, check_concurrency
from msglab.app.bridge import EventLoopThread, as_handler
from msglab.app.context import compose
from msglab.app.middleware.metrics import metrics
from msglab.app.observer import Observer
from msglab.app.runner import ConsumerRunner
from msglab.app.transactional import TransactionalRunner
from msglab.errors import UsageError
from msglab.ports import Transport
from msglab.profiles import DeliveryProfile

Connect = Callable[[str, DeliveryProfile], Transport]


def select(app: App, only: Sequence[str] = ()) -> list[ConsumerSpec]:
    """The App's consumers named in ``only`` (all when empty); UsageError for an App without
    handlers or a name it does not have."""
    specs = app.consumers
    if not specs:
        raise UsageError(f"app {app.name} has no handlers: register one with @app.consumer(...)")
    if not only:
        return specs
    names = {s.name for s in specs}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise UsageError(
            f"app {app.name} has no handler {unknown[0]!r}; it has: {', '.join(sorted(names))}"
        )
    return [s for s in specs if s.name in only]


def with_concurrency(spec: ConsumerSpec, concurrency: int | None) -> ConsumerSpec:
    """``spec`` with ``concurrency`` handler threads when given and it handles one message at
    a time (a batch handler keeps one)."""
    if concurrency is None or spec.batch or spec.profile is DeliveryProfile.EXACTLY_ONCE:
        return spec
    check_concurrency(concurrency, spec.batch)
    return dataclasses.replace(spec, concurrency=concurrency)


class Runtime:
    def __init__(
        self,
        app: App,
        connect: Connect,
        only: Sequence[str] = (),
        observer_for: Callable[[ConsumerSpec], Observer] | None = None,
        concurrency: int | None = None,
        instance: str = "0",
    ) -> None:
        self.app = app
        self._observer_for = observer_for
        self.specs = [with_concurrency(s, concurrency) for s in select(app, only)]
        self._connect = connect
        self._stop = threading.Event()
        self._loop = EventLoopThread()
        self._transports: dict[tuple[str, DeliveryProfile], Transport] = {}
        self._instance = instance  # an exactly-once consumer's identity (app.transactional)
        self.runners: list[ConsumerRunner | TransactionalRunner] = []

    def _transport(self, spec: ConsumerSpec) -> Transport:
        key = (spec.transport, spec.profile)
        if key not in self._transports:
            self._transports[key] = self._connect(spec.transport, spec.profile)
        return self._transports[key]

    def start(self) -> None:
        """Build every consumer's transport and chain (errors in them raise here, before
        anything runs), then start their flows."""
        for spec in self.specs:
            chain = spec.middleware
            observer = self.app.observer
            if self._observer_for is not None:
                observer = self._observer_for(spec)
                chain = (*chain, metrics(observer))
            handler = compose(as_handler(spec.fn, spec.is_async, self._loop), chain)
            args = (spec, handler, self._transport(spec), observer, self._stop)
            if spec.profile is DeliveryProfile.EXACTLY_ONCE:
                self.runners.append(TransactionalRunner(*args, instance=self._instance))
            else:
                self.runners.append(ConsumerRunner(*args))
        for runner in self.runners:
            runner.start()

    def wait_consuming(self, timeout_s: float) -> bool:
        """Wait until every consumer's main flow has subscribed (its retry flow and dead-letter
        place first): messages published from then on are kept for the App's groups."""
        deadline = time.monotonic() + timeout_s
        return all(r.consuming.wait(max(0.0, deadline - time.monotonic())) for r in self.runners)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Stop fetching (from any thread, a signal handler included): each flow finishes the
        delivery in hand and settles it."""
        self._stop.set()
        for runner in self.runners:
            runner.close_subscribers()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until every flow ended (True), or ``timeout_s`` passed (False)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for runner in self.runners:
            for t in runner.threads:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                t.join(left)
                if t.is_alive():
                    return False
        return True

    def stop(self, grace_s: float = 10.0) -> bool:
        """``request_stop``, wait up to ``grace_s`` for the flows, close the publishers and the
        event loop; whether every flow ended in time (a flow still running is abandoned: what
        it holds unsettled comes again from the broker)."""
        self.request_stop()
        ended = self.wait(grace_s)
        if ended:
            for runner in self.runners:
                runner.close_publisher()
            self._loop.close()
        return ended

    def __enter__(self) -> Runtime:
        self.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stop()
