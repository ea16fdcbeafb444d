"""What both Redis transports share: one connection factory and one error boundary.

Publishing connections never retry a command by themselves: a retried write after a lost
reply may store a message twice, so the outcome is reported as *unknown* instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from msglab.config import ClientConfig, check_name
from msglab.errors import ConnectError, PublishError, TransportError
from msglab.extras import driver_import
from msglab.message import Message

with driver_import("redis", __name__):
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry


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


def check_reachable(name: str, config: ClientConfig) -> None:
    """PING once without retries: an unreachable server fails within the connect timeout,
    naming host:port (the long-lived clients retry, which suits reconnects, not a first try)."""
    client = connect(config, retries=0)
    try:
        with boundary(name, config.url):
            client.ping()
    finally:
        client.close()


@contextmanager
def boundary(transport: str, url: str) -> Iterator[None]:
    """Convert redis-py's exceptions into msglab's, chained."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ConnectError(transport, address(url), str(exc) or type(exc).__name__) from exc
    except redis.RedisError as exc:
        raise TransportError(f"{transport}: {exc}") from exc


CHUNK = 500


class PipelinedPublisher:
    """Sends a batch in pipelined chunks of ``CHUNK`` commands (one round trip each).

    ``command(pipe, topic, message)`` queues one message. A connection lost during a chunk
    makes that chunk *unknown* (Redis may have run part of it) and the later chunks *failed*
    (never sent); an unreachable server is a ConnectError before anything is sent.
    """

    def __init__(
        self, name: str, config: ClientConfig, command: Callable[[Any, str, Message], None]
    ) -> None:
        self._name = name
        self._config = config
        self._command = command
        self._client = connect(config, retries=0)
        self._lock = threading.Lock()

    def publish(self, topic: str, messages: Iterable[Message]) -> None:
        check_name("topic", topic)
        batch = list(messages)
        for m in batch:
            self._config.check_payload(len(m.payload))
        with self._lock, boundary(self._name, self._config.url):
            self._client.ping()
            for start in range(0, len(batch), CHUNK):
                chunk = batch[start : start + CHUNK]
                pipe = self._client.pipeline(transaction=False)
                for m in chunk:
                    self._command(pipe, topic, m)
                try:
                    pipe.execute()
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    raise PublishError(
                        f"{self._name}: connection lost while publishing to {topic}: {exc}",
                        failed=tuple(m.id for m in batch[start + CHUNK :]),
                        unknown=tuple(m.id for m in chunk),
                    ) from exc

    def close(self) -> None:
        self._client.close()


def raw_pipelined(
    config: ClientConfig,
    topic: str,
    messages: list[Message],
    command: Callable[[Any, str, Message], None],
) -> tuple[int, float]:
    """The raw-client baseline for ``msglab bench``: redis-py alone, the same pipelined
    chunks, no msglab in the loop; connects first, then times the sending."""
    client = connect(config, retries=0)
    client.ping()
    began = time.perf_counter()
    for start in range(0, len(messages), CHUNK):
        pipe = client.pipeline(transaction=False)
        for m in messages[start : start + CHUNK]:
            command(pipe, topic, m)
        pipe.execute()
    seconds = time.perf_counter() - began
    client.close()
    return len(messages), seconds
