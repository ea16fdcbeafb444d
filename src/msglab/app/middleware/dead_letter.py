"""Dead letters: a message whose handler failed for good goes to the topic's dead-letter place
(``<topic>.dlq``) with the reason, and the delivery is acked, so it no longer blocks anything.

List it before ``Retry``: it receives what ``Retry`` gives up on (the last attempt, a
``NonRetryable`` such as a payload that cannot be decoded, an error outside ``retry_on``).
The record's fields are ``msglab.app.records.DeadLetterRecord``'s. A ``FlowError`` (the retry
or dead-letter place itself could not be written) is raised on: the delivery is then not
acked and comes again. A batch handler's ``BatchFailure`` dead-letters only its failed
messages.
"""

from __future__ import annotations

from msglab.app.context import Context, Handler, failed
from msglab.app.records import FlowError


class DeadLetter:
    """The dead-letter middleware (a class, so the runtime sees that the consumer needs its
    dead-letter place declared before anything is dead-lettered)."""

    def __call__(self, inner: Handler) -> Handler:
        def dead_lettering(ctx: Context) -> None:
            try:
                inner(ctx)
            except FlowError:
                raise
            except Exception as exc:
                if ctx.scheduler is None:
                    raise
                those, error = failed(ctx, exc)
                ctx.scheduler.dead_letter(those, error)
                ctx.observer.dead_lettered(ctx.topic, ctx.group, ctx.handler, len(those.messages))

        return dead_lettering

    def __repr__(self) -> str:
        return "DeadLetter()"
