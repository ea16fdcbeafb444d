"""A time limit per handler call: after ``seconds`` the call counts as failed with
``HandlerTimeout`` (retryable).

An ``async def`` handler is cancelled at the deadline (the runtime's event loop sees
``ctx.deadline``). A plain function cannot be stopped from outside in Python: it runs on in a
helper thread and its result is ignored, so its effects must be idempotent or transactional
(the idempotent middleware's transaction only commits if the function returns).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from msglab.app.context import Context, Handler, HandlerTimeout, Middleware
from msglab.errors import ConfigError


def timeout(seconds: float) -> Middleware:
    if seconds <= 0:
        raise ConfigError(f"timeout {seconds}: use a positive number of seconds")

    def wrap(inner: Handler) -> Handler:
        def limited(ctx: Context) -> None:
            deadline = time.monotonic() + seconds
            if ctx.deadline is not None:
                deadline = min(deadline, ctx.deadline)
            call = replace(ctx, deadline=deadline)
            outcome: list[BaseException | None] = []

            def run() -> None:
                try:
                    inner(call)
                    outcome.append(None)
                except BaseException as exc:  # handed to the waiting thread
                    outcome.append(exc)

            worker = threading.Thread(target=run, name=f"handler-{ctx.handler}", daemon=True)
            worker.start()
            worker.join(max(0.0, deadline - time.monotonic()))
            if not outcome:
                raise HandlerTimeout(f"{ctx.handler} took longer than {seconds:g}s")
            if outcome[0] is not None:
                raise outcome[0]

        return limited

    return wrap
