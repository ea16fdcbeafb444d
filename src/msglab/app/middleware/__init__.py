"""The built-in middleware, one module each: ``DeadLetter``, ``Retry``, ``timeout``,
``correlation``, ``idempotent``, ``metrics``. Each is a ``Middleware`` (``Handler -> Handler``);
list them first-outermost, e.g. ``[DeadLetter(), Retry(), correlation, timeout(30)]``."""

from msglab.app.middleware.correlation import correlation
from msglab.app.middleware.dead_letter import DeadLetter
from msglab.app.middleware.idempotent import idempotent
from msglab.app.middleware.metrics import metrics
from msglab.app.middleware.retry import Retry
from msglab.app.middleware.timeout import timeout

__all__ = ["DeadLetter", "Retry", "correlation", "idempotent", "metrics", "timeout"]
