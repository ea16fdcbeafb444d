"""``msglab relay`` as a user runs it: a service's outbox rows, on PostgreSQL and on SQLite,
reach Kafka, RabbitMQ and Redis Streams in order per key; SIGTERM finishes and exits 0; bad
input gets one clear line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.db import engine
from msglab.message import Message
from msglab.outbox import Outbox
from tests.app.helpers import Reader

pytestmark = pytest.mark.postgres

SERVERS = {"kafka": "kafka_server", "rabbitmq": "rabbitmq_server", "redis-streams": "redis_server"}


def relay(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "msglab", "relay", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
@pytest.mark.parametrize("transport", list(SERVERS))
def test_the_relay_delivers_a_services_outbox_in_order_per_key(
    request: pytest.FixtureRequest, tmp_path: Path, database: str, transport: str
) -> None:
    server: Any = request.getfixturevalue(SERVERS[transport])
    if database == "sqlite":
        url = f"sqlite:///{tmp_path}/orders.db"
    else:
        url = request.getfixturevalue("postgres_server").url
    topic = f"relay-cli-{uuid.uuid4().hex[:8]}"
    reader = Reader(open_transport(transport, ClientConfig(url=server.url)), topic)
    db = engine(url)
    sent = [Message(f"{i}".encode(), f"customer-{i % 7}") for i in range(300)]
    process = relay(
        "-t", transport, "--db", url, "--topics", topic, "--create-table", "--batch", "50"
    )
    try:
        Outbox(db).create_table()
        for i in range(0, len(sent), 30):  # ten business transactions, while the relay runs
            with db.begin() as conn:
                Outbox.add(conn, topic, sent[i : i + 30])
        got = reader.wait(len(sent), timeout_s=60)
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
        reader.stop()
        db.dispose()
    assert process.returncode == 0, err
    assert "stopped: 300 published" in err
    assert {m.id for m in got} == {m.id for m in sent}
    per_key: dict[str | None, list[str]] = defaultdict(list)
    for m in got:
        per_key[m.key].append(m.id)
    for key, ids in per_key.items():
        assert ids == [m.id for m in sent if m.key == key]  # each key in its commit order


def test_bad_input_gets_one_clear_line(tmp_path: Path, cli: Any) -> None:
    missing = cli("relay", "-t", "kafka", "--db", f"sqlite:///{tmp_path}/empty.db", check=False)
    assert missing.returncode == 2
    assert "no msglab_outbox table" in missing.stderr and "--create-table" in missing.stderr
    away = cli(
        "relay", "-t", "kafka", "--db", "postgresql://app:s3cret@127.0.0.1:1/orders", check=False
    )
    assert away.returncode != 0
    assert "127.0.0.1:1" in away.stderr and "s3cret" not in away.stderr
    unknown = cli(
        "relay",
        "-t",
        "carrier-pigeon",
        "--db",
        f"sqlite:///{tmp_path}/x.db",
        "--create-table",
        check=False,
    )
    assert unknown.returncode == 2 and "kafka" in unknown.stderr  # the valid names listed
    keep = cli("relay", "-t", "kafka", "--keep", "a week", check=False)
    assert keep.returncode == 2 and "7d" in keep.stderr
