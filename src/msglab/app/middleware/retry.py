"""Retry that does not block: a failed message leaves the main flow and comes back after a
delay, while later messages keep flowing.

``Retry`` decides; the runtime carries out (``Context.scheduler.retry_later``): it publishes
the message to ``<topic>.retry`` with its next attempt and due time in headers and acks the
delivery, and its retry flow runs the handler again once due (``msglab.app.runner``). An error
``Retry`` does not retry (the last attempt failed, a ``NonRetryable``, a type outside
``retry_on``) is raised on, to the dead-letter middleware listed before it. A batch
handler's ``BatchFailure`` retries only its failed messages.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from msglab.app.context import Context, Handler, NonRetryable, failed
from msglab.errors import ConfigError


@dataclass(frozen=True)
class Retry:
    """``attempts``: runs of the handler in all, the first included (1: never retry).
    ``first_s`` / ``max_s``: the delay after the first failure, doubling per attempt up to
    ``max_s``. ``jitter``: each delay is drawn uniformly within ``delay * (1 +- jitter)``
    (0 <= jitter < 1), so failures of many messages do not come back together.
    ``retry_on``: the error types retried; a ``NonRetryable`` never is."""

    attempts: int = 5
    first_s: float = 1.0
    max_s: float = 60.0
    jitter: float = 0.2
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    rand: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"Retry attempts {self.attempts}: use 1 or more")
        if self.first_s < 0 or self.max_s < self.first_s:
            raise ConfigError(
                f"Retry backoff {self.first_s}..{self.max_s}s: need 0 <= first <= max"
            )
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"Retry jitter {self.jitter}: use 0 <= jitter < 1")

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether attempt ``attempt`` (1 = the first run), failed with ``error``, gets
        another."""
        if attempt >= self.attempts or isinstance(error, NonRetryable):
            return False
        return isinstance(error, self.retry_on)

    def base_delay_s(self, attempt: int) -> float:
        """The delay after attempt ``attempt`` failed, before jitter."""
        return float(min(self.max_s, self.first_s * 2 ** (attempt - 1)))

    def delay_s(self, attempt: int) -> float:
        """The delay after attempt ``attempt`` failed, jittered."""
        base = self.base_delay_s(attempt)
        return base * (1 - self.jitter + 2 * self.jitter * self.rand())

    def __call__(self, inner: Handler) -> Handler:
        def retrying(ctx: Context) -> None:
            try:
                inner(ctx)
            except Exception as exc:
                those, error = failed(ctx, exc)
                if ctx.scheduler is None or not self.should_retry(error, ctx.attempt):
                    raise
                ctx.scheduler.retry_later(those, self.delay_s(ctx.attempt), error)
                ctx.observer.retried(
                    ctx.topic, ctx.group, ctx.handler, len(those.messages), ctx.attempt + 1
                )

        return retrying
