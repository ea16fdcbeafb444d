"""The README's service example is examples/orders.py, and it works: its billing App on the
memory transport beside msglab's PostgreSQL; the whole story (outbox, relay, worker) as the
README runs it, on each transport that stores messages; as a worker on the real Redis and
RabbitMQ through a broker restart in test_worker_cli.py."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from msglab.app import DeadLetterRecord
from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.message import Message
from tests.app.helpers import Reader, running

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "orders.py"


def test_the_readme_shows_the_example_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Services: `msglab worker`") :]
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert block is not None
    assert block.group(1).strip() in EXAMPLE.read_text(), "README and examples/orders.py differ"


def load_example(monkeypatch: pytest.MonkeyPatch, topic: str, db_url: str) -> ModuleType:
    monkeypatch.setenv("ORDERS_TRANSPORT", "memory")
    monkeypatch.setenv("ORDERS_TOPIC", topic)
    monkeypatch.setenv("ORDERS_DB", db_url)
    spec = importlib.util.spec_from_file_location(f"orders_{topic}", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_bills_orders_and_dead_letters_bad_ones(
    monkeypatch: pytest.MonkeyPatch, postgres_server: Any
) -> None:
    topic = f"orders-{uuid.uuid4().hex[:6]}"
    example = load_example(monkeypatch, topic, postgres_server.url)
    config = ClientConfig(url=f"memory://{topic}")
    transport = open_transport("memory", config)
    orders = [Message(json.dumps({"id": i, "amount": 5 * i}).encode(), key="c") for i in range(4)]
    negative = Message(json.dumps({"id": 9, "amount": -1}).encode())
    garbage = Message(b"<order/>")
    invoices = Reader(transport, f"{topic}.invoices")
    dead = Reader(transport, f"{topic}.dlq")
    try:
        with running(example.app, config):
            pub = transport.publisher()
            pub.publish(topic, [orders[0], negative, garbage, *orders[1:]])
            got = invoices.wait(4)
            dead.wait(2)
    finally:
        invoices.stop()
        dead.stop()
    assert [json.loads(m.payload) for m in got] == [{"order": i, "total": 5 * i} for i in range(4)]
    assert [m.headers["correlation-id"] for m in got] == [m.id for m in orders]
    records = [DeadLetterRecord.parse(m) for m in dead.messages]
    assert [(r.message.id, r.failure.error_type) for r in records if r] == [
        (negative.id, "NonRetryable"),
        (garbage.id, "DecodeError"),
    ]


@pytest.mark.parametrize("transport", ["kafka", "rabbitmq", "redis-streams", "files"])
def test_the_readme_command_tells_the_whole_story(transport: str, postgres_server: Any) -> None:
    """`python examples/orders.py --transport T`: 5 orders through the outbox and the relay,
    5 invoices (each once), the negative order and the message that is not JSON dead-lettered."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--transport", transport, "--orders", "5"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "ORDERS_DB": postgres_server.url},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "relay: 7 messages published" in out.stdout, out.stdout
    assert "billing: 5 invoices for 5 orders; 2 dead-lettered" in out.stdout, out.stdout
