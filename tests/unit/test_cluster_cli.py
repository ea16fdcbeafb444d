"""``msglab publish | consume | bench --cluster``: what is refused, and how, before any client
connects (no server needed: the home is an empty folder, so msglab's clusters do not run)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from msglab.brokers import CLUSTER_OF, service_of
from msglab.cli import main
from msglab.errors import UsageError
from msglab.lab.scenario import Scenario
from msglab.settings import SERVICES, env_name

COMMANDS = [("publish",), ("consume",), ("bench", "publish"), ("bench", "consume")]


@pytest.fixture(autouse=True)
def empty_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A home where nothing runs, and no server given by URL."""
    monkeypatch.setenv("MSGLAB_HOME", str(tmp_path))
    for service in SERVICES:
        monkeypatch.delenv(f"MSGLAB_{env_name(service)}_URL", raising=False)
    return tmp_path


def msglab(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """Run ``msglab ARGS`` in this process; its exit code and its stderr (one line)."""
    monkeypatch.setattr(sys, "argv", ["msglab", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    return code, " ".join(err.split())  # Rich may wrap a long line


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("transport", ["files", "memory"])
def test_a_transport_without_a_cluster_exits_2_with_the_message_of_run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: tuple[str, ...],
    transport: str,
) -> None:
    code, err = msglab(monkeypatch, capsys, *command, "-t", transport, "--cluster")
    with pytest.raises(UsageError) as run_says:
        Scenario(transport="files", cluster=True)
    assert code == 2
    assert err == f"error: {str(run_says.value).replace('files', transport)}"
    assert "transports with one: kafka, rabbitmq, redis-streams, redis-pubsub" in err


def test_the_cluster_of_each_transport_is_the_one_run_uses() -> None:
    for transport, cluster in CLUSTER_OF.items():
        assert service_of(transport, cluster=True) == cluster
        assert Scenario(transport=transport, profile="at-most-once", cluster=True).service == (
            cluster
        )
    assert service_of("kafka") == "kafka" and service_of("files") is None


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("transport", ["kafka", "rabbitmq", "redis-streams"])
def test_a_cluster_that_does_not_run_is_named_with_the_command_that_starts_it_at_once(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: tuple[str, ...],
    transport: str,
) -> None:
    began = time.monotonic()
    code, err = msglab(monkeypatch, capsys, *command, "-t", transport, "--cluster")
    assert code == 1
    cluster = CLUSTER_OF[transport]
    assert f"{cluster} is not running" in err and f"`msglab infra up {cluster}`" in err, err
    assert time.monotonic() - began < 2  # no connection tried: the nodes' PID files say it


@pytest.mark.parametrize(
    ("transport", "single", "url"),
    [
        ("kafka", "kafka", "broker1:9092,broker2:9092"),
        ("rabbitmq", "rabbitmq", "amqp://app:s3cret@mq.example.com:5672/%2F"),
        ("redis-pubsub", "redis", "redis://:s3cret@cache.example.com:6379/0"),
    ],
)
def test_a_url_of_the_single_server_is_refused_with_cluster(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    transport: str,
    single: str,
    url: str,
) -> None:
    """``--cluster`` while MSGLAB_<SERVER>_URL names the transport's single server: which one
    was meant is not clear, so neither is used (exit 2), the password hidden."""
    monkeypatch.setenv(f"MSGLAB_{env_name(single)}_URL", url)
    profile = "at-most-once" if transport == "redis-pubsub" else "at-least-once"
    code, err = msglab(monkeypatch, capsys, "publish", "-t", transport, "-p", profile, "--cluster")
    cluster = CLUSTER_OF[transport]
    assert code == 2
    assert f"MSGLAB_{env_name(single)}_URL names a single {single}" in err, err
    assert f"MSGLAB_{env_name(cluster)}_URL" in err and "s3cret" not in err, err


def test_a_cluster_given_by_url_is_used_as_given(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """MSGLAB_KAFKA_CLUSTER_URL (beside MSGLAB_KAFKA_URL) is the cluster ``--cluster`` uses:
    the client tries it and fails within the connect timeout naming its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MSGLAB_KAFKA_URL", "single.example.com:9092")
    monkeypatch.setenv("MSGLAB_KAFKA_CLUSTER_URL", f"127.0.0.1:{port}")
    monkeypatch.setenv("MSGLAB_CONNECT_TIMEOUT", "1")
    began = time.monotonic()
    code, err = msglab(monkeypatch, capsys, "publish", "-t", "kafka", "--cluster", "-n", "1")
    assert code == 1 and f"127.0.0.1:{port}" in err, err
    assert time.monotonic() - began < 4
