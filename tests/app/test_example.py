"""The README's service example is examples/orders.py, and it works (on the memory transport
here; as a worker on the real Redis in test_worker_cli.py)."""

from __future__ import annotations

import importlib.util
import json
import re
import uuid
from pathlib import Path
from types import ModuleType

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


def load_example(monkeypatch: pytest.MonkeyPatch, topic: str) -> ModuleType:
    monkeypatch.setenv("ORDERS_TRANSPORT", "memory")
    monkeypatch.setenv("ORDERS_TOPIC", topic)
    spec = importlib.util.spec_from_file_location(f"orders_{topic}", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_bills_orders_and_dead_letters_bad_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = f"orders-{uuid.uuid4().hex[:6]}"
    example = load_example(monkeypatch, topic)
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
