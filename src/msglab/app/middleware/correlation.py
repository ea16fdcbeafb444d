"""Correlation ids: every message a handler emits (``Context.publish``) carries the
``correlation-id`` of the message it handles, or that message's own id when it has none, so a
chain of messages can be followed across services (``causation-id`` names the direct cause)."""

from __future__ import annotations

from dataclasses import replace

from msglab.app.context import CORRELATION_HEADER, Context, Handler


def correlation(inner: Handler) -> Handler:
    def correlating(ctx: Context) -> None:
        found = ctx.message.headers.get(CORRELATION_HEADER) or ctx.message.id
        inner(replace(ctx, correlation_id=found))

    return correlating
