"""A run uses exactly the servers the user named (``MSGLAB_<SERVICE>_URL``), or is refused
before anything starts when its fault cannot act on them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from msglab.errors import UsageError
from msglab.infra import Status
from msglab.lab.run import run
from msglab.lab.scenario import Scenario
from msglab.lab.servers import plan
from msglab.settings import Settings

PASSWORD = "n4med-s3rver-pw"


def settings_with(**urls: str) -> Settings:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_URL")}
    return Settings.from_env({**env, **{f"MSGLAB_{k.upper()}_URL": v for k, v in urls.items()}})


@pytest.mark.parametrize(
    ("transport", "fault", "pattern", "external", "named"),
    [
        ("redis-streams", "broker-kill", "direct", "redis", "redis"),
        ("rabbitmq", "broker-restart", "direct", "rabbitmq", "rabbitmq"),
        ("kafka", "db-kill", "outbox", "postgres", "postgres"),
        ("kafka", "connect-kill", "cdc", "connect", "connect"),
        ("kafka", "blackhole", "direct", "kafka", "Kafka clients reconnect"),
        ("kafka", "latency", "direct", "kafka", "bypassing the proxy"),
    ],
)
def test_a_fault_that_cannot_act_on_the_named_server_is_refused(
    transport: str, fault: str, pattern: str, external: str, named: str
) -> None:
    settings = settings_with(**{external: f"scheme://user:{PASSWORD}@10.9.9.9:1234/x"})
    with pytest.raises(UsageError) as refused:
        plan(Scenario(transport=transport, fault=fault, pattern=pattern), settings)
    assert named in str(refused.value)
    assert PASSWORD not in str(refused.value)
    assert f"MSGLAB_{external.upper()}_URL" in str(refused.value)


def test_a_network_fault_on_an_external_redis_goes_through_the_proxy_to_it() -> None:
    settings = settings_with(redis=f"redis://:{PASSWORD}@10.9.9.9:7000/3")
    servers = plan(Scenario(transport="redis-streams", fault="blackhole"), settings)
    port = settings.ports["redis_proxy"]
    assert servers.broker_url == f"redis://:{PASSWORD}@127.0.0.1:{port}/3"
    assert servers.services == ["redis", "postgres", "toxiproxy"]
    (broker, database) = servers.to_json()
    assert broker == {
        "role": "broker",
        "service": "redis",
        "owner": "external",
        "address": "10.9.9.9:7000",
        "url": "redis://:***@10.9.9.9:7000/3",
        "via": "toxiproxy",
    }
    assert database["owner"] == "msglab"


def test_the_cli_refuses_before_it_starts_anything(tmp_path: Path) -> None:
    env = {**os.environ, "MSGLAB_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:9/0"}
    began = time.monotonic()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "msglab", "run", "-t", "redis-streams"),
            *("--fault", "broker-kill", "--runs-dir", str(tmp_path / "runs")),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "cannot act on redis" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists(), "a run folder was made before the refusal"
    assert time.monotonic() - began < 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def second_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    """A Redis server msglab did not start: the 'external' one."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = _free_port()
    proc = subprocess.Popen(
        [
            *(binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield client
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.toxiproxy
def test_a_blackhole_on_an_external_redis_writes_to_that_redis(
    tmp_path: Path, second_redis: redis.Redis, redis_server: Status, toxiproxy_server: Status
) -> None:
    port = second_redis.connection_pool.connection_kwargs["port"]
    settings = settings_with(redis=f"redis://127.0.0.1:{port}/0")
    own = redis.Redis.from_url(redis_server.url)
    own_xadds = _xadd_calls(own)
    scenario = Scenario(
        transport="redis-streams",
        fault="blackhole",
        messages=300,
        rate=300,
        kill_after=100,
        down_s=1.0,
        drain_quiet_s=5.0,
    )
    report = run(scenario, settings, runs_dir=tmp_path)
    assert report["confirmed"] == 300 and report["lost"] == 0, report
    assert _xadd_calls(second_redis) >= 300, "the messages did not reach the named server"
    assert _xadd_calls(own) == own_xadds, "msglab's own Redis got the run's messages"
    run_json = json.loads((tmp_path / scenario.run_id / "run.json").read_text())
    broker = run_json["servers"][0]
    assert (broker["owner"], broker["address"], broker["via"]) == (
        "external",
        f"127.0.0.1:{port}",
        "toxiproxy",
    )


def _xadd_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_xadd", {}).get("calls", 0))
