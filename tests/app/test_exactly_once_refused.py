"""Where ``exactly-once`` is refused, and why, without a server: every transport but Kafka
when it is built, an App consumer at registration, the runtime on a transport without
transactions, the lab but as a Kafka pipeline, and ``msglab worker`` (exit 2, one line)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from msglab.app import App, Runtime
from msglab.brokers import TRANSACTIONAL, TRANSPORTS, open_transport, transport_class
from msglab.brokers.kafka import KafkaTransport
from msglab.config import ClientConfig
from msglab.errors import UsageError
from msglab.lab.scenario import Scenario
from msglab.ports import TransactionalTransport, Transport
from msglab.profiles import EXACTLY_ONCE_REASON, DeliveryProfile

EO = DeliveryProfile.EXACTLY_ONCE
REASON = re.escape(EXACTLY_ONCE_REASON)
URLS = {
    "memory": "memory://eos",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:1/%2F",
    "redis-pubsub": "redis://127.0.0.1:1/0",
    "redis-streams": "redis://127.0.0.1:1/0",
    "files": "file:///nonexistent/msglab-eos",
}


def test_the_registry_names_exactly_the_transports_with_transactions() -> None:
    offering = {n for n in TRANSPORTS if hasattr(transport_class(n), "transactional")}
    assert offering == set(TRANSACTIONAL) == {"kafka"}


@pytest.mark.parametrize("name", sorted(URLS))
def test_every_other_transport_refuses_exactly_once_when_built(name: str) -> None:
    assert name not in TRANSACTIONAL
    with pytest.raises(UsageError, match=f"{name} cannot promise exactly-once: {REASON}"):
        open_transport(name, ClientConfig(url=URLS[name], profile=EO))


def test_kafka_takes_it_and_offers_transactions() -> None:
    transport = open_transport("kafka", ClientConfig(url="127.0.0.1:1", profile=EO))
    assert isinstance(transport, TransactionalTransport)
    assert transport.config.profile is EO  # kept, not turned into at-least-once
    eo = KafkaTransport.profile_settings()["exactly-once"]
    assert eo["consumer isolation.level"] == "read_committed"
    assert eo["pipeline consumer enable.auto.commit"] == "False"
    assert eo["pipeline producer transactional.id"] == "msglab-eos:G:T:I"
    assert eo["producer enable.idempotence"] == "True"  # the pipeline producer differs in:
    assert eo["pipeline producer transaction.timeout.ms"] == "60000"
    with pytest.raises(UsageError, match="needs profile exactly-once"):
        open_transport("kafka", ClientConfig(url="127.0.0.1:1")).transactional("g", "0")  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["rabbitmq", "redis-streams"])
def test_an_app_consumer_is_refused_at_registration(name: str) -> None:
    app = App("eos")
    with pytest.raises(UsageError, match=f"{name} cannot promise exactly-once: {REASON}"):
        app.add(print, "orders", transport=name, group="g", profile="exactly-once")
    assert app.consumers == []


def test_an_exactly_once_consumer_handles_one_message_at_a_time() -> None:
    app = App("eos")
    with pytest.raises(UsageError, match="one transaction, in order"):
        app.add(print, "o", transport="kafka", group="g", profile="exactly-once", concurrency=2)
    spec = app.add(print, "o", transport="kafka", group="g", profile="exactly-once")
    assert spec.profile is EO


def test_the_runtime_refuses_a_transport_without_transactions() -> None:
    app = App("eos")
    app.add(print, "orders", transport="kafka", group="g", profile="exactly-once")

    def connect(name: str, profile: DeliveryProfile) -> Transport:
        return open_transport("memory", ClientConfig(url="memory://eos-runtime"))

    runtime = Runtime(app, connect, concurrency=4)  # --concurrency leaves it at 1
    assert runtime.specs[0].concurrency == 1
    with pytest.raises(UsageError, match=f"kafka cannot promise exactly-once: {REASON}"):
        runtime.start()


def test_an_invalid_instance_is_refused_before_anything_runs() -> None:
    app = App("eos")
    app.add(print, "orders", transport="kafka", group="g", profile="exactly-once")

    def connect(name: str, profile: DeliveryProfile) -> Transport:
        return open_transport(name, ClientConfig(url="127.0.0.1:1", profile=profile))

    with pytest.raises(UsageError, match="invalid instance name 'a b'"):
        Runtime(app, connect, instance="a b").start()


def test_the_lab_runs_it_only_as_a_kafka_pipeline_saying_so() -> None:
    Scenario(transport="kafka", profile="exactly-once")  # the pipeline: accepted
    for refused in (
        {"transport": "redis-streams"},
        {"transport": "kafka", "pattern": "outbox"},
        {"transport": "kafka", "workload": "replay"},
    ):
        with pytest.raises(UsageError, match="Kafka-to-Kafka pipeline"):
            Scenario(**{"profile": "exactly-once", **refused})


def test_the_worker_exits_2_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "eos_refused.py").write_text(
        "from msglab.app import App\napp = App('r')\n"
        "app.add(print, 'orders', transport='redis-streams', group='g', profile='exactly-once')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "msglab", "worker", "eos_refused:app"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2, lines
    assert len(lines) == 1 and EXACTLY_ONCE_REASON in lines[0], lines
