"""`msglab status`: bad input, an unreachable server, and the lag a real group has after a
real `msglab publish` and `msglab consume`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import run_cli


def test_unknown_transport_exits_2_listing_the_valid_ones() -> None:
    result = run_cli("status", "-t", "zeromq", check=False)
    assert result.returncode == 2
    for name in ("kafka", "rabbitmq", "redis-streams", "files"):
        assert name in result.stderr


def test_a_transport_that_stores_nothing_has_no_lag_saying_why() -> None:
    result = run_cli("status", "-t", "redis-pubsub", check=False)
    assert result.returncode == 2
    assert "stores nothing" in result.stderr


def test_the_consumers_status_and_the_servers_status_are_both_there() -> None:
    assert "behind on TOPIC" in run_cli("status", "--help").stdout
    assert "--json" in run_cli("infra", "status", "--help").stdout


@pytest.mark.parametrize("transport", ["kafka", "rabbitmq", "redis-streams"])
def test_unreachable_server_fails_within_the_connect_timeout_naming_host_port(
    transport: str,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service, url = {
        "kafka": ("KAFKA", f"127.0.0.1:{port}"),
        "rabbitmq": ("RABBITMQ", f"amqp://guest:sekrit@127.0.0.1:{port}/"),
        "redis-streams": ("REDIS", f"redis://:sekrit@127.0.0.1:{port}/0"),
    }[transport]
    env = {**os.environ, f"MSGLAB_{service}_URL": url, "MSGLAB_CONNECT_TIMEOUT": "2"}
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "msglab", "status", "-t", transport, "--topic", "t", "-g", "g"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    elapsed = time.monotonic() - began
    assert result.returncode == 1, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    assert "sekrit" not in result.stderr + result.stdout
    assert elapsed < 2 + 4, f"{elapsed:.1f}s"  # the timeout plus interpreter start-up


def status_json(transport: str, topic: str, expect: int) -> dict[str, Any]:
    """``msglab status --json`` once its lag is ``expect`` (a broker requeues or commits a
    moment after the client left), or the last answer after 15 s."""
    deadline = time.monotonic() + 15
    while True:
        got: dict[str, Any] = json.loads(
            run_cli("status", "-t", transport, "--topic", topic, "-g", "g", "--json").stdout
        )
        if got["lag"] == expect or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


@pytest.mark.parametrize(
    "transport",
    [
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("redis-streams", marks=pytest.mark.redis),
        "files",
    ],
)
def test_status_shows_what_the_group_has_not_acked(
    transport: str, unique_name: str, request: pytest.FixtureRequest
) -> None:
    service = {"kafka": "kafka", "rabbitmq": "rabbitmq", "redis-streams": "redis"}
    if transport in service:
        request.getfixturevalue(f"{service[transport]}_server")
    topic = unique_name
    where = ("-t", transport, "--topic", topic, "-g", "g")
    run_cli("consume", *where, "-n", "1", "--idle", "0.5")  # the group's queue / stream group
    run_cli("publish", "-t", transport, "--topic", topic, "-n", "100")
    run_cli("consume", *where, "-n", "40", "--idle", "5")
    got = status_json(transport, topic, 60)
    assert got["lag"] == 60, got
    assert (got["transport"], got["topic"], got["group"]) == (transport, topic, "g")
    assert sum(p["lag"] for p in got["partitions"]) == 60
    table = run_cli("status", *where).stdout
    assert "lag 60" in table and all(len(line) <= 80 for line in table.splitlines()), table
    # the rest, down to 0, is the contract's test (a Redis Streams consumer takes over what a
    # gone one held after claim_idle_s, 30 s by default: too long for the CLI here)
