"""`msglab infra` wiring and bad input: exit codes and messages a user sees."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from msglab.settings import SERVICES
from tests.conftest import run_cli


def test_unknown_service_exits_2_and_lists_valid_names() -> None:
    result = run_cli("infra", "status", "kafak", check=False)
    assert result.returncode == 2
    for name in SERVICES:
        assert name in result.stderr


def test_kill_needs_a_service_name() -> None:
    result = run_cli("infra", "kill", check=False)
    assert result.returncode == 2
    assert "name the service" in result.stderr


def test_unknown_backend_exits_2() -> None:
    result = run_cli("infra", "status", "--backend", "podman", check=False)
    assert result.returncode == 2
    assert "native" in result.stderr


def _cli_env(tmp_path: object, **extra: str) -> dict[str, str]:
    return {**os.environ, "MSGLAB_HOME": str(tmp_path), **extra}


def test_kill_of_a_stopped_server_is_a_clear_error(tmp_path: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "msglab", "infra", "kill", "redis"],
        capture_output=True,
        text=True,
        env=_cli_env(tmp_path, MSGLAB_REDIS_PORT="26999"),
    )
    assert result.returncode == 1
    assert "redis is not running" in result.stderr


def test_external_service_is_shown_and_refused_for_kill(tmp_path: object) -> None:
    env = _cli_env(tmp_path, MSGLAB_REDIS_URL="redis://127.0.0.1:1/0")
    shown = subprocess.run(
        [sys.executable, "-m", "msglab", "infra", "status", "redis", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    (row,) = json.loads(shown.stdout)
    assert row["owner"] == "external" and row["healthy"] is False and row["pid"] is None
    refused = subprocess.run(
        [sys.executable, "-m", "msglab", "infra", "kill", "redis"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert refused.returncode == 1
    assert "external" in refused.stderr and "will not kill" in refused.stderr


def test_port_held_by_another_process_is_refused_naming_it(tmp_path: object) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "msglab", "infra", "up", "redis"],
            capture_output=True,
            text=True,
            env=_cli_env(tmp_path, MSGLAB_REDIS_PORT=str(port)),
        )
    finally:
        holder.close()
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr


@pytest.mark.redis
def test_compose_backend_without_engine_says_so() -> None:
    result = run_cli("infra", "status", "--backend", "compose", check=False)
    assert result.returncode == 1
    assert "Docker engine" in result.stderr or "docker client" in result.stderr
