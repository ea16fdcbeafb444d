"""Metrics as middleware: reports each call of the handler to an ``Observer`` (received,
processed or failed, and how long it took); the runtime and the retry, dead-letter and
idempotent middleware report ``retried``, ``dead_lettered`` and ``dedup_skipped`` to the same
observer (``App(observer=...)``). List it after ``DeadLetter`` and ``Retry``, so that it sees
each attempt's failure before they handle it. ``observer``: defaults to the App's. A batch
that partly failed (``BatchFailure``) is reported twice, its handled messages as processed
and its failed ones as failed, each with the call's run time."""

from __future__ import annotations

import time

from msglab.app.context import Context, Handler, Middleware, failed
from msglab.app.observer import Observer


def metrics(observer: Observer | None = None) -> Middleware:
    def wrap(inner: Handler) -> Handler:
        def measured(ctx: Context) -> None:
            seen = observer or ctx.observer
            count = len(ctx.messages)
            seen.received(ctx.topic, ctx.group, ctx.handler, count)
            began = time.perf_counter()
            try:
                inner(ctx)
            except Exception as exc:
                took = time.perf_counter() - began
                those, error = failed(ctx, exc)
                bad = len(those.messages)
                if bad < count:  # a BatchFailure: the others were handled
                    seen.processed(ctx.topic, ctx.group, ctx.handler, count - bad, took)
                seen.failed(ctx.topic, ctx.group, ctx.handler, bad, took, type(error).__name__)
                raise
            seen.processed(ctx.topic, ctx.group, ctx.handler, count, time.perf_counter() - began)

        return measured

    return wrap
