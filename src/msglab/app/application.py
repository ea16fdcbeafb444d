"""``App``: the handlers of a service, registered per topic with their transport, group and
profile, and the middleware around them.

    app = App("billing")

    @app.consumer("orders", transport="kafka", group="billing", decode=json.loads)
    def bill(ctx: Context) -> None:
        ctx.publish("invoices", make_invoice(ctx.value))

A handler is a function of one ``Context``, plain or ``async def`` (run on the runtime's own
event loop); ``batch=True`` hands it the messages fetched together (``ctx.messages``).
``concurrency=n`` runs a per-message handler on n threads, each key's messages in order on
one of them (``msglab.app.keyed_pool``); a batch handler runs one batch at a time. Its
middleware is the App's, then its own: ``App(middleware=[a, b])`` with ``consumer(...,
middleware=[c])`` runs ``a(b(c(handler)))``. ``profile="exactly-once"`` (Kafka only) handles
each fetched batch in one transaction with what the handler publishes
(``msglab.app.transactional``). Registration checks every name at once (``UsageError``: exit
2 in the CLI); nothing connects until a runtime runs the App (``msglab.app.runtime``,
``msglab worker``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from msglab.app.context import Middleware
from msglab.app.middleware.dead_letter import DeadLetter
from msglab.app.middleware.retry import Retry
from msglab.app.observer import NO_OBSERVER, Observer
from msglab.app.records import dlq_topic, retry_group, retry_topic
from msglab.brokers import TRANSACTIONAL, TRANSPORTS
from msglab.config import check_name
from msglab.errors import UsageError
from msglab.profiles import EXACTLY_ONCE_REASON, DeliveryProfile

HandlerFn = Callable[..., Any]
"""A user's handler: ``fn(ctx) -> None``, or ``async def fn(ctx) -> None``."""


def default_middleware() -> list[Middleware]:
    """What an App without ``middleware`` gets: dead letters after ``Retry()``'s 5 attempts."""
    return [DeadLetter(), Retry()]


@dataclass(frozen=True)
class ConsumerSpec:
    """One registered handler. ``name``: unique in its App (the function's name by default);
    ``middleware``: the App's, then the handler's own, first outermost."""

    name: str
    topic: str
    transport: str
    group: str
    profile: DeliveryProfile
    fn: HandlerFn
    is_async: bool
    batch: bool
    max_messages: int
    middleware: tuple[Middleware, ...]
    decode: Callable[[bytes], Any] | None
    concurrency: int = 1

    @property
    def retries(self) -> bool:
        """Whether failed messages go to ``<topic>.retry`` (a ``Retry`` in the chain)."""
        return any(isinstance(m, Retry) for m in self.middleware)

    @property
    def dead_letters(self) -> bool:
        """Whether ``<topic>.dlq`` takes what fails for good (a ``DeadLetter`` in the chain)."""
        return any(isinstance(m, DeadLetter) for m in self.middleware)


def check_concurrency(concurrency: int, batch: bool) -> None:
    """UsageError unless ``concurrency`` is 1 or more, and 1 for a batch handler."""
    if concurrency < 1:
        raise UsageError(f"concurrency {concurrency}: use 1 or more")
    if batch and concurrency > 1:
        raise UsageError(
            "concurrency applies to per-message handlers; a batch handler runs one batch at a "
            "time (its messages' keys are mixed)"
        )


def check_exactly_once(transport: str, concurrency: int) -> None:
    """UsageError unless an exactly-once consumer can run: on a transport with transactions
    (``brokers.TRANSACTIONAL``: Kafka), one message at a time (its transaction is the batch's:
    ``msglab.app.transactional``)."""
    if transport not in TRANSACTIONAL:
        raise UsageError(f"{transport} cannot promise exactly-once: {EXACTLY_ONCE_REASON}")
    if concurrency > 1:
        raise UsageError(
            "concurrency applies to at-least-once consumers; an exactly-once consumer handles "
            "each fetched batch in one transaction, in order"
        )


class App:
    """A service's consumers. ``middleware``: around every handler (None: ``DeadLetter()``
    then ``Retry()``; ``[]``: none, a failed delivery is nacked for the broker to redeliver).
    ``observer``: receives the runtime's and the middleware's events (metrics)."""

    def __init__(
        self,
        name: str,
        middleware: Sequence[Middleware] | None = None,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self.name = check_name("app", name)
        self.middleware = tuple(default_middleware() if middleware is None else middleware)
        self.observer = observer
        self._consumers: list[ConsumerSpec] = []

    @property
    def consumers(self) -> list[ConsumerSpec]:
        return list(self._consumers)

    def consumer(
        self,
        topic: str,
        *,
        transport: str,
        group: str,
        profile: str = "at-least-once",
        batch: bool = False,
        max_messages: int = 100,
        middleware: Sequence[Middleware] = (),
        decode: Callable[[bytes], Any] | None = None,
        name: str | None = None,
        concurrency: int = 1,
    ) -> Callable[[HandlerFn], HandlerFn]:
        """Register the decorated function for ``topic``; it is returned unchanged."""

        def register(fn: HandlerFn) -> HandlerFn:
            self.add(
                fn,
                topic,
                transport=transport,
                group=group,
                profile=profile,
                batch=batch,
                max_messages=max_messages,
                middleware=middleware,
                decode=decode,
                name=name,
                concurrency=concurrency,
            )
            return fn

        return register

    def add(
        self,
        fn: HandlerFn,
        topic: str,
        *,
        transport: str,
        group: str,
        profile: str = "at-least-once",
        batch: bool = False,
        max_messages: int = 100,
        middleware: Sequence[Middleware] = (),
        decode: Callable[[bytes], Any] | None = None,
        name: str | None = None,
        concurrency: int = 1,
    ) -> ConsumerSpec:
        """``consumer`` without the decorator; the spec registered."""
        check_name("topic", topic)
        check_name("topic", retry_topic(topic))
        check_name("topic", dlq_topic(topic))
        check_name("group", group)
        check_name("group", retry_group(group))
        if transport not in TRANSPORTS:
            raise UsageError(f"unknown transport {transport!r}; valid: {', '.join(TRANSPORTS)}")
        if max_messages < 1:
            raise UsageError(f"max_messages {max_messages}: use 1 or more")
        check_concurrency(concurrency, batch)
        parsed = DeliveryProfile.parse(profile)
        if parsed is DeliveryProfile.EXACTLY_ONCE:
            check_exactly_once(transport, concurrency)
        if not callable(fn):
            raise UsageError(f"handler for {topic} is not callable: {fn!r}")
        spec = ConsumerSpec(
            name=name or str(getattr(fn, "__name__", "handler")),
            topic=topic,
            transport=transport,
            group=group,
            profile=parsed,
            fn=fn,
            is_async=inspect.iscoroutinefunction(fn),
            batch=batch,
            max_messages=max_messages,
            middleware=(*self.middleware, *middleware),
            decode=decode,
            concurrency=concurrency,
        )
        for other in self._consumers:
            if other.name == spec.name:
                raise UsageError(f"app {self.name}: two handlers named {spec.name!r}")
            if (other.transport, other.topic, other.group) == (transport, topic, group):
                raise UsageError(
                    f"app {self.name}: {other.name} already consumes {transport}:{topic} as "
                    f"group {group}"
                )
        self._consumers.append(spec)
        return spec
