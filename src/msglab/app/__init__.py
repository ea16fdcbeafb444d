"""The consumer runtime: ``App`` (handlers registered per topic, with middleware), the
``Context`` a handler gets, the built-in middleware, and ``Runtime``, which runs an App's
consumers (``msglab worker MODULE:APP`` from the command line).

Retry never blocks a topic: a failed message goes to ``<topic>.retry`` and comes back when
due; a message that fails for good goes to ``<topic>.dlq`` with its reason. Both work the same
on every transport, through the ports only (``msglab.app.runner``).
"""

from msglab.app.application import App, ConsumerSpec, default_middleware
from msglab.app.context import (
    BatchFailure,
    Context,
    DecodeError,
    Handler,
    HandlerTimeout,
    Middleware,
    NonRetryable,
    compose,
)
from msglab.app.middleware import DeadLetter, Retry, correlation, idempotent, metrics, timeout
from msglab.app.observer import NO_OBSERVER, Observer
from msglab.app.records import DeadLetterRecord, FlowError, RetryEntry
from msglab.app.runtime import Runtime

__all__ = [
    "NO_OBSERVER",
    "App",
    "BatchFailure",
    "ConsumerSpec",
    "Context",
    "DeadLetter",
    "DeadLetterRecord",
    "DecodeError",
    "FlowError",
    "Handler",
    "HandlerTimeout",
    "Middleware",
    "NonRetryable",
    "Observer",
    "Retry",
    "RetryEntry",
    "Runtime",
    "compose",
    "correlation",
    "default_middleware",
    "idempotent",
    "metrics",
    "timeout",
]
