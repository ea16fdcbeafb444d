"""The Redis transports' ``redis+sentinel://`` URLs: parsed in the broker module, a client made
through redis-py's Sentinel, an unreachable list of Sentinels failing within the connect
timeout and named."""

from __future__ import annotations

import socket
import time

import pytest

from msglab.brokers import open_transport
from msglab.brokers._redis_common import SentinelURL, address, connect, sentinel_url
from msglab.config import ClientConfig
from msglab.errors import ConnectError, UsageError
from msglab.message import Message
from msglab.profiles import DeliveryProfile

URL = "redis+sentinel://127.0.3.1:26390,127.0.3.2:26390,127.0.3.3:26390/msglab"


def test_a_sentinel_url_names_every_sentinel_and_the_master() -> None:
    assert sentinel_url(URL) == SentinelURL(
        (("127.0.3.1", 26390), ("127.0.3.2", 26390), ("127.0.3.3", 26390)), "msglab"
    )


def test_one_sentinel_a_database_and_a_password() -> None:
    parts = sentinel_url("redis+sentinel://:s%40cret@localhost:26379/mymaster/?db=3")
    assert parts == SentinelURL((("localhost", 26379),), "mymaster", 3, "s@cret")


def test_an_ipv6_sentinel() -> None:
    parts = sentinel_url("redis+sentinel://[::1]:26379/m")
    assert parts is not None and parts.sentinels == (("::1", 26379),)


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "rediss://h:1", "unix:///tmp/r.sock"])
def test_other_urls_are_redis_pys_own(url: str) -> None:
    assert sentinel_url(url) is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h:1", "is not redis\\+sentinel://"),
        ("redis+sentinel:///m", "is not redis\\+sentinel://"),
        ("redis+sentinel://h:1/a/b", "is not redis\\+sentinel://"),
        ("redis+sentinel://h/m", "'h' is not host:port"),
        ("redis+sentinel://h:1,:2/m", "':2' is not host:port"),
        ("redis+sentinel://h:x/m", "'h:x' is not host:port"),
        ("redis+sentinel://h:70000/m", "is not host:port"),
        ("redis+sentinel://h:1/m?db=x", "db='x'"),
        ("redis+sentinel://h:1/m?timeout=1", "unknown option"),
    ],
)
def test_a_malformed_sentinel_url_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        sentinel_url(url)


def test_errors_name_the_sentinels_and_the_master() -> None:
    assert address(URL) == ("127.0.3.1:26390,127.0.3.2:26390,127.0.3.3:26390 (master msglab)")
    assert address("redis://127.0.0.1:6390/0") == "127.0.0.1:6390"


def test_the_client_goes_through_the_sentinels_to_the_master() -> None:
    config = ClientConfig(url=URL + "?db=2", connect_timeout_s=1.5, request_timeout_s=4.0)
    client = connect(config, retries=0)
    pool = client.connection_pool
    assert pool.service_name == "msglab" and pool.is_master
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["socket_timeout"] == 4.0
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26390] * 3
    assert sentinels[0].connection_pool.connection_kwargs["socket_connect_timeout"] == 0.5
    client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", ["redis-streams", "redis-pubsub"])
def test_unreachable_sentinels_fail_within_the_connect_timeout_naming_them(
    transport: str,
) -> None:
    ports = [_free_port(), _free_port()]
    url = f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/msglab"
    config = ClientConfig(url=url, connect_timeout_s=1.0, profile=DeliveryProfile.AT_MOST_ONCE)
    publisher = open_transport(transport, config).publisher()
    began = time.monotonic()
    try:
        with pytest.raises(ConnectError, match=f"127.0.0.1:{ports[1]} \\(master msglab\\)"):
            publisher.publish("t", [Message(b"x")])
    finally:
        publisher.close()
    assert time.monotonic() - began < 1.5
