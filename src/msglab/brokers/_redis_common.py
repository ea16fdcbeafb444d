"""What both Redis transports share: one connection factory and one error boundary.

Publishing connections never retry a command by themselves: a retried write after a lost
reply may store a message twice, so the outcome is reported as *unknown* instead.

Two URL forms: redis-py's own (``redis://host:port/db``), and
``redis+sentinel://host:port[,host:port...]/<master>[?db=N]``, every Redis Sentinel's address then
the name the Sentinels monitor the primary under: the client is then redis-py's
``Sentinel(...).master_for(master)``, whose ``SentinelConnectionPool`` asks the Sentinels for the
primary's address before each new connection (and drops the connections to a former primary),
so that a client reconnecting after a failover reaches the new primary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from msglab.config import ClientConfig, check_name
from msglab.errors import ConnectError, PublishError, TransportError, UsageError
from msglab.extras import driver_import
from msglab.message import Message

with driver_import("redis", __name__):
    import redis
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL: the Sentinels' addresses, the master's name, the
    database and the Redis password (``redis+sentinel://:password@h1:p1,.../master``)."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    password: str | None = None

    @property
    def addresses(self) -> str:
        """``h1:p1,h2:p2 (master <name>)``, as errors name what could not be reached."""
        listed = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"{listed} (master {self.master})"


def sentinel_url(url: str) -> SentinelURL | None:
    """The parts of a ``redis+sentinel://`` URL; None for any other URL (redis-py's own);
    UsageError naming what is wrong in a malformed one."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        return None
    form = f"{SENTINEL_SCHEME}://host:port[,host:port...]/master[?db=N]"
    userinfo, _, hosts = parts.netloc.rpartition("@")
    master = parts.path.strip("/")
    if not hosts or not master or "/" in master:
        raise UsageError(f"{url!r} is not {form}")
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"{url!r}: {item!r} is not host:port (in {form})")
        sentinels.append((host, int(port)))
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"db"})
    if unknown:
        raise UsageError(f"{url!r}: unknown option(s) {', '.join(unknown)}; known: db")
    db = query.get("db", ["0"])[-1]
    if not db.isdigit():
        raise UsageError(f"{url!r}: db={db!r} is not a database number")
    password = unquote(userinfo.partition(":")[2]) if userinfo else None
    return SentinelURL(tuple(sentinels), unquote(master), int(db), password or None)


def address(url: str) -> str:
    if (parts := sentinel_url(url)) is not None:
        return parts.addresses
    pool = redis.connection.ConnectionPool.from_url(url)
    kw = pool.connection_kwargs
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"


PUBLISH_RETRIES = 0
"""A publisher's client never retries a command: a write retried after a lost reply may be
stored twice, so its outcome is reported as unknown; the next publish connects again."""


SUBSCRIBER_RETRIES = 2


def subscriber_retries(config: ClientConfig) -> int:
    """A subscriber's client retries a command after a ConnectionError or TimeoutError (redis-py's
    ``Retry``) this many times, reconnecting each time: a read or an ack may be repeated. Few:
    redis-py 8.1's Sentinel-managed connection can stay on a demoted primary through all its
    retries (each answered READONLY); past them the Streams subscriber waits and builds a new
    client, which asks the Sentinels (``StreamsSubscriber._connection_lost``)."""
    return min(SUBSCRIBER_RETRIES, config.reconnect.attempts)


def client_settings(config: ClientConfig, retries: int) -> dict[str, Any]:
    """What the Redis client (redis-py's, or the primary's through the Sentinels) is given:
    msglab's timeouts, and ``retries`` retries of a command that lost its connection or timed
    out, each after ``config.reconnect.first_s`` x 2^n, at most ``max_s`` (redis-py's
    ``ExponentialBackoff``), each on a new connection (through the Sentinels: to the primary
    they name then)."""
    backoff = ExponentialBackoff(cap=config.reconnect.max_s, base=config.reconnect.first_s)
    return {
        "socket_connect_timeout": config.connect_timeout_s,
        "socket_timeout": config.request_timeout_s,
        "retry": Retry(backoff, retries),
        "health_check_interval": 0,
        "client_name": config.client_id,
    }


def sentinel_settings(config: ClientConfig, sentinels: int) -> dict[str, Any]:
    """What the connection to each of ``sentinels`` Sentinels is given: a share of the connect
    timeout each and no retry (the next Sentinel is the retry; redis-py's default is 10), so
    that a list of unreachable Sentinels fails within the connect timeout."""
    share = config.connect_timeout_s / sentinels
    return {
        "socket_connect_timeout": share,
        "socket_timeout": share,
        "retry": Retry(NoBackoff(), 0),
    }


def connect(config: ClientConfig, *, retries: int) -> Any:  # redis-py is partly untyped
    """A client with msglab's timeouts; ``retries`` > 0 only where a retry cannot duplicate."""
    if (parts := sentinel_url(config.url)) is not None:
        return _sentinel_client(config, parts, retries)
    return redis.Redis.from_url(config.url, **client_settings(config, retries))


def _sentinel_client(config: ClientConfig, parts: SentinelURL, retries: int) -> Any:
    """The primary's client through the Sentinels: before each new connection it asks them in
    turn for the primary's address (redis-py raises MasterNotFoundError, a ConnectionError
    naming the master, when none answers), drops its idle connections to a former primary,
    and takes a READONLY reply (the primary it is connected to was made a replica) as a lost
    connection."""
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(parts.sentinels), sentinel_kwargs=sentinel_settings(config, len(parts.sentinels))
    )
    return sentinel.master_for(  # type: ignore[no-untyped-call]
        parts.master, **client_settings(config, retries), db=parts.db, password=parts.password
    )


def failover_settings(consume: str) -> dict[str, str]:
    """What the clients do when their server goes away, for ``msglab profiles``: from the
    settings ``connect`` gives publishers (``PUBLISH_RETRIES``) and subscribers
    (``subscriber_retries``), with ``ClientConfig``'s defaults and a Sentinel URL of three
    Sentinels. ``consume``: what a subscriber's reconnect means for its messages."""
    config = ClientConfig(url=f"{SENTINEL_SCHEME}://h1:1,h2:2,h3:3/msglab")
    client = client_settings(config, PUBLISH_RETRIES)
    sentinel = sentinel_settings(config, 3)
    retries = subscriber_retries(config)
    return {
        "connection": f"socket_connect_timeout={client['socket_connect_timeout']:g}, "
        f"socket_timeout={client['socket_timeout']:g}, "
        f"health_check_interval={client['health_check_interval']}",
        "failover sentinel": f"{SENTINEL_SCHEME}:// URL: each new connection asks the "
        f"Sentinels in turn for the primary ({sentinel['socket_timeout']:.3g} s each, the "
        "connect timeout over 3; no retry); idle connections to a former primary are dropped; "
        "READONLY (the primary made a replica) is a lost connection",
        "failover publish": f"retry={PUBLISH_RETRIES}: a connection lost in a pipelined chunk "
        "makes it unknown and the rest failed; a publish that finds its connection gone "
        "fails before sending, the next one connects again",
        "failover consume": f"retry={retries} on ConnectionError and TimeoutError, the n-th "
        f"after {config.reconnect.first_s:g} s x 2^n (at most {config.reconnect.max_s:g} s), "
        f"each on a new connection; {consume}",
    }


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
    (never sent); an unreachable server is a ConnectError before anything is sent. With
    ``config.wait_replicas``, each chunk ends in ``WAIT``: a chunk fewer replicas acknowledged
    in time is *unknown* too (the primary has it; a failover may not keep it).
    """

    def __init__(
        self, name: str, config: ClientConfig, command: Callable[[Any, str, Message], None]
    ) -> None:
        self._name = name
        self._config = config
        self._command = command
        self._wait = config.wait_replicas
        self._wait_ms = int(config.request_timeout_s * 500)  # half: the socket's must not fire
        self._client = connect(config, retries=PUBLISH_RETRIES)
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
                if self._wait:
                    pipe.wait(self._wait, self._wait_ms)
                try:
                    replicas = pipe.execute()[-1]
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    raise PublishError(
                        f"{self._name}: connection lost while publishing to {topic}: {exc}",
                        failed=tuple(m.id for m in batch[start + CHUNK :]),
                        unknown=tuple(m.id for m in chunk),
                    ) from exc
                if self._wait and replicas < self._wait:
                    raise PublishError(
                        f"{self._name}: WAIT {self._wait}: {replicas} replica(s) had the writes "
                        f"to {topic} after {self._wait_ms} ms; they may not survive a failover",
                        failed=tuple(m.id for m in batch[start + CHUNK :]),
                        unknown=tuple(m.id for m in chunk),
                    )

    def close(self) -> None:
        self._client.close()


def set_settings(config: ClientConfig) -> dict[str, str]:
    """What ``msglab run --set`` turns in the clients built from ``config``: ``wait``."""
    return {"wait": str(config.wait_replicas)}


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
