"""External-call hygiene for any client msglab drives (docs/guarantees.md): a circuit breaker that
fails fast while a dependency is down, a bulkhead that refuses work over capacity, and a
distributed lock on Redis with a wait timeout (``msglab.resilience.redis_lock``; it imports
redis-py, so it is not imported here)."""

from msglab.resilience.breaker import BreakerOpen, CircuitBreaker
from msglab.resilience.bulkhead import Bulkhead, OverCapacity

__all__ = ["BreakerOpen", "Bulkhead", "CircuitBreaker", "OverCapacity"]
