"""`up` is idempotent, repairs stale state, and a failed start shows the server's log."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from msglab.errors import NotRunningError, ServerStartError
from msglab.infra.native import NativeBackend
from msglab.settings import DEFAULT_PORTS, Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def private_settings(home: Path, **overrides: int) -> Settings:
    ports = {**DEFAULT_PORTS, "redis": free_port(), **overrides}
    return Settings(home=home, ports=ports, start_timeout_s=15)


@pytest.mark.redis
def test_up_is_idempotent_and_down_stops(tmp_path: Path) -> None:
    backend = NativeBackend(private_settings(tmp_path))
    try:
        (first,) = backend.up(["redis"])
        (second,) = backend.up(["redis"])
        assert first.started and first.cold
        assert not second.started
        (status,) = backend.status(["redis"])
        assert status.healthy and status.pid
    finally:
        assert backend.down(["redis"]) == ["redis"]
    (status,) = backend.status(["redis"])
    assert status.pid is None and not status.healthy
    with pytest.raises(NotRunningError):
        backend.kill("redis")


@pytest.mark.redis
def test_stale_pid_file_from_a_killed_up_is_repaired(tmp_path: Path) -> None:
    backend = NativeBackend(private_settings(tmp_path))
    pid_file = tmp_path / "redis" / "server.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text("999999\n")  # a PID that does not run
    try:
        (report,) = backend.up(["redis"])
        assert report.started
        assert pid_file.read_text().strip() != "999999"
    finally:
        backend.down(["redis"])


@pytest.mark.redis
def test_half_written_pid_file_is_repaired(tmp_path: Path) -> None:
    backend = NativeBackend(private_settings(tmp_path))
    pid_file = tmp_path / "redis" / "server.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text("not-a-pi")  # cut short by a killed `up`
    try:
        (report,) = backend.up(["redis"])
        assert report.started
    finally:
        backend.down(["redis"])


@pytest.mark.redis
def test_server_that_fails_to_start_reports_its_log(tmp_path: Path) -> None:
    settings = private_settings(tmp_path)
    backend = NativeBackend(settings)
    svc = backend.service("redis")
    (tmp_path / "redis" / "data").mkdir(parents=True)
    # A corrupt append-only file: redis-server refuses to start and says why in its log.
    aof_dir = tmp_path / "redis" / "data" / "appendonlydir"
    aof_dir.mkdir()
    (aof_dir / "appendonly.aof.manifest").write_text("this is not a manifest\n")
    with pytest.raises(ServerStartError) as caught:
        svc.up()
    assert "last lines of the log" in str(caught.value)
    assert svc.pid() is None


def test_the_second_kafka_broker_refuses_to_start_without_the_first(tmp_path: Path) -> None:
    backend = NativeBackend(private_settings(tmp_path, kafka2=free_port()))
    with pytest.raises(ServerStartError, match="msglab infra up kafka kafka2"):
        backend.up(["kafka2"])
    assert backend.service("kafka2").pid() is None
