"""What both Redis transports share: one connection factory and one error boundary.

Publishing connections never retry a command by themselves: a retried write after a lost
reply may store a message twice, so the outcome is reported as *unknown* instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from msglab.config import ClientConfig
from msglab.errors import ConnectError, TransportError


def address(url: str) -> str:
    pool = redis.connection.ConnectionPool.from_url(url)
    kw = pool.connection_kwargs
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"


def connect(config: ClientConfig, *, retries: int) -> Any:  # redis-py is partly untyped
    """A client with msglab's timeouts; ``retries`` > 0 only where a retry cannot duplicate."""
    retry = Retry(
        ExponentialBackoff(cap=config.reconnect.max_s, base=config.reconnect.first_s), retries
    )
    return redis.Redis.from_url(
        config.url,
        socket_connect_timeout=config.connect_timeout_s,
        socket_timeout=config.request_timeout_s,
        retry=retry,
        health_check_interval=0,
        client_name=config.client_id,
    )


@contextmanager
def boundary(transport: str, url: str) -> Iterator[None]:
    """Convert redis-py's exceptions into msglab's, chained."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ConnectError(transport, address(url), str(exc) or type(exc).__name__) from exc
    except redis.RedisError as exc:
        raise TransportError(f"{transport}: {exc}") from exc
