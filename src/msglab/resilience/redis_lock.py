"""A distributed lock on Redis (the single-instance pattern of the Redis documentation):
``SET key token NX PX ttl`` to take it, a Lua compare-and-delete to release only one's own.

``wait_s`` bounds how long ``acquire`` waits (polling every ``poll_s``) before it raises
``LockTimeout``: a caller never waits forever. ``ttl_s`` frees a lock whose holder died; a
holder slower than the ttl may lose the lock while it works, so keep the work well under it
(or fence writes with a version column). Use it as a context manager: it is always released.
"""

from __future__ import annotations

import time
import uuid
from types import TracebackType
from typing import Any

from msglab.errors import MsglabError
from msglab.extras import driver_import

with driver_import("redis", __name__):
    import redis

_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


class LockTimeout(MsglabError):
    """The lock was not free within the wait timeout."""


class RedisLock:
    def __init__(
        self,
        client: Any,
        name: str,
        ttl_s: float = 10.0,
        wait_s: float = 5.0,
        poll_s: float = 0.002,
    ) -> None:
        self._client = client
        self.key = f"msglab:lock:{name}"
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._wait_s = wait_s
        self._poll_s = poll_s
        self._token = ""
        self.waited_s = 0.0  # how long the last acquire waited

    @classmethod
    def from_url(cls, url: str, name: str, **options: Any) -> RedisLock:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        return cls(client, name, **options)

    def acquire(self) -> None:
        token = uuid.uuid4().hex
        began = time.monotonic()
        while not self._client.set(self.key, token, nx=True, px=self._ttl_ms):
            if time.monotonic() - began >= self._wait_s:
                self.waited_s = time.monotonic() - began
                raise LockTimeout(f"lock {self.key} still held after {self._wait_s} s")
            time.sleep(self._poll_s)
        self.waited_s = time.monotonic() - began
        self._token = token

    def release(self) -> bool:
        """Release the lock if this holder still has it; False if it had expired (another
        holder may have taken it meanwhile)."""
        token, self._token = self._token, ""
        return bool(self._client.eval(_RELEASE, 1, self.key, token)) if token else False

    def __enter__(self) -> RedisLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
