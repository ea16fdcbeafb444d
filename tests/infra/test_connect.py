"""The ``connect`` service: Kafka Connect with the Debezium plugin, installed from Maven Central,
started after Kafka and PostgreSQL, SIGKILLed and restarted like the other servers."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from msglab.errors import NotRunningError
from msglab.infra.connect import OFFSET_FLUSH_INTERVAL_MS, Connect, pom_property
from msglab.infra.kafka import KAFKA_VERSION, Kafka
from msglab.settings import DEFAULT_PORTS, Settings
from tests.conftest import run_cli, status_json


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connect_runs_the_brokers_kafka_version_with_debezium_3_4() -> None:
    assert pom_property("kafka.version") == KAFKA_VERSION
    assert pom_property("debezium.version").startswith("3.4.")
    assert DEFAULT_PORTS["connect"] == 28083


def test_worker_config(tmp_path: Path) -> None:
    svc = Connect(Settings(home=tmp_path))
    props = dict(
        line.split("=", 1) for line in svc.worker_properties().splitlines() if line.strip()
    )
    assert props["offset.flush.interval.ms"] == str(OFFSET_FLUSH_INTERVAL_MS)
    assert props["plugin.path"] == str(svc.plugin_dir.resolve())
    assert svc.lib_dir != Kafka(svc.settings).lib_dir  # the broker's jars stay apart
    assert svc.plugin_dir.parent == svc.lib_dir.parent
    assert props["key.converter.schemas.enable"] == "false"
    for topic in ("config", "offset", "status"):
        assert props[f"{topic}.storage.replication.factor"] == "1"
    assert props["listeners"] == f"http://127.0.0.1:{DEFAULT_PORTS['connect']}"


def test_up_without_kafka_and_postgres_names_them(tmp_path: Path) -> None:
    ports = {
        **DEFAULT_PORTS,
        "kafka": free_port(),
        "postgres": free_port(),
        "connect": free_port(),
    }
    svc = Connect(Settings(home=tmp_path, ports=ports))
    if not svc.is_installed():
        pytest.skip("connect is not installed (msglab infra install connect)")
    with pytest.raises(NotRunningError) as caught:
        svc.up()
    assert "kafka" in str(caught.value) and "postgres" in str(caught.value)
    assert svc.pid() is None


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.connect
def test_install_up_status_kill_restart(connect_server: Any) -> None:
    run_cli("infra", "install", "connect")  # idempotent once installed
    before = status_json("connect")
    assert before["healthy"] and before["pid"], before
    assert "Debezium 3.4" in before["version"]
    with urllib.request.urlopen(f"{connect_server.url}/connector-plugins", timeout=10) as reply:
        plugins = {p["class"] for p in json.load(reply)}
    assert "io.debezium.connector.postgresql.PostgresConnector" in plugins

    killed = run_cli("infra", "kill", "connect")
    assert f"killed pid {before['pid']}" in killed.stdout
    down = status_json("connect")
    assert down["pid"] is None and down["healthy"] is False, down

    run_cli("infra", "restart", "connect")
    after = status_json("connect")
    assert after["healthy"] is True and after["pid"] not in (None, before["pid"]), after
    timings = json.loads((Path(after["data_dir"]).parent / "timings.json").read_text())
    print(f"\nconnect start times: {timings}")
