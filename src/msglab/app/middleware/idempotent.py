"""The idempotent consumer as middleware: the handler's effect and the dedup rows of its
messages commit in one database transaction (``msglab.consumers.idempotent``), and a message
applied before is skipped.

The handler writes its effect through ``ctx.db`` (the transaction's connection) and gets only
the messages not applied before (none: it is not called). It raising rolls the claims back with
the effect, so a retry applies the message again: list this after ``Retry``. A
``BatchFailure`` commits the effects of the others and drops only the failed messages' claims.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from msglab.app.context import BatchFailure, Context, Handler, Middleware
from msglab.message import Message


class Claims(Protocol):
    """What the middleware needs of ``IdempotentConsumer``: ``handle`` runs ``effect(conn,
    fresh)`` in the claims' transaction and returns the messages applied now."""

    def handle(
        self, messages: Sequence[Message], effect: Callable[[Any, Sequence[Message]], None]
    ) -> list[Message]: ...

    def unclaim(self, conn: Any, ids: Sequence[str]) -> None: ...


def idempotent(consumer: Claims) -> Middleware:
    def wrap(inner: Handler) -> Handler:
        def once(ctx: Context) -> None:
            partial: list[BatchFailure] = []

            def effect(conn: Any, fresh: Sequence[Message]) -> None:
                try:
                    inner(replace(ctx.with_messages(fresh), db=conn))
                except BatchFailure as exc:  # the others' effects commit, the failed claims go
                    consumer.unclaim(conn, [m.id for m in exc.messages])
                    partial.append(exc)

            applied = consumer.handle(ctx.messages, effect)
            skipped = len(ctx.messages) - len(applied)
            if skipped:
                ctx.observer.dedup_skipped(ctx.topic, ctx.group, ctx.handler, skipped)
            if partial:
                raise partial[0]

        return once

    return wrap
