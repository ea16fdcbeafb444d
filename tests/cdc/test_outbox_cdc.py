"""CDC of the outbox on the real servers: PostgreSQL -> Debezium in Kafka Connect -> Kafka, read
with msglab's own Kafka subscriber.

Messages are written with ``Outbox.add`` in the writer's transaction. Those committed arrive with
their id, key, payload (and, through ``expand_headers``, headers), in commit order per key; those
rolled back never arrive. A SIGKILL of the Connect worker mid-stream loses nothing committed; the
duplicates it causes (events published since the last offset flush) are counted and printed.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from msglab.brokers import open_transport
from msglab.cdc import (
    ConnectClient,
    database_settings,
    drop_slot_sql,
    expand_headers,
    password_file_of,
    slot_name,
    start_outbox_connector,
    stop_outbox_connector,
)
from msglab.config import ClientConfig
from msglab.infra import Backend
from msglab.infra.connect import Connect
from msglab.message import Message
from msglab.outbox import Outbox
from msglab.settings import Settings
from msglab.testing.contract import Collector

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.connect]

KEYS = [f"key-{i}" for i in range(5)]
SECRETS = Connect(Settings.from_env()).secrets_dir  # what msglab's own worker may read


@pytest.fixture
def connect(connect_server: Any) -> Iterator[ConnectClient]:
    with ConnectClient(connect_server.url) as client:
        yield client


def slots(db: Engine) -> dict[str, bool]:
    with db.connect() as conn:
        rows = conn.execute(text("SELECT slot_name, active FROM pg_replication_slots"))
        return {str(name): bool(active) for name, active in rows}


@pytest.fixture
def cdc(
    connect: ConnectClient, db: Engine, postgres_server: Any, unique_name: str
) -> Iterator[str]:
    """A connector publishing this test's topic (named like the test); the topic's name."""
    topic = unique_name
    name = f"cdc_{unique_name}"
    start_outbox_connector(
        connect, name, postgres_server.url, topics=[topic], timeout_s=90, secrets_dir=SECRETS
    )
    assert slot_name(name) in slots(db)  # from here on every commit is captured
    yield topic
    try:
        assert stop_outbox_connector(connect, name, secrets_dir=SECRETS)
        assert not password_file_of(SECRETS, name).exists(), "the password file stayed"
        deadline = time.monotonic() + 15
        while slot_name(name) in slots(db) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert slot_name(name) not in slots(db), "stop_outbox_connector left the slot behind"
    finally:
        if slot_name(name) in slots(db):
            with db.begin() as conn:
                conn.execute(text(drop_slot_sql(slot_name(name))))


def first_arrivals(reader: Collector) -> dict[str, tuple[Message, float]]:
    """Each message's first delivery and its arrival time."""
    out: dict[str, tuple[Message, float]] = {}
    for d, t in zip(reader.deliveries, reader.arrived, strict=True):
        out.setdefault(d.message.id, (d.message, t))
    return out


def reading(kafka_url: str, topic: str, group: str) -> Collector:
    """msglab's Kafka subscriber reading in a thread from before the first write."""
    return Collector(open_transport("kafka", ClientConfig(url=kafka_url)), topic, group)


def write(db: Engine, topic: str, messages: list[Message], commit: bool = True) -> float:
    """One transaction adding ``messages`` to the outbox; the time it committed."""
    with db.connect() as conn:
        tx = conn.begin()
        Outbox.add(conn, topic, messages)
        if commit:
            tx.commit()
        else:
            tx.rollback()
    return time.monotonic()


def reordered(first: dict[str, tuple[Message, float]], sent: list[Message]) -> int:
    """Per key, first deliveries that arrived after a message committed later."""
    position = {m.id: i for i, m in enumerate(sent)}
    count = 0
    last: dict[str | None, int] = {}
    for mid, (m, _t) in sorted(first.items(), key=lambda item: item[1][1]):
        p = position[mid]
        if p < last.get(m.key, -1):
            count += 1
        last[m.key] = max(p, last.get(m.key, -1))
    return count


def test_the_connector_config_holds_a_reference_to_the_password_not_the_password(
    connect: ConnectClient, cdc: str, postgres_server: Any
) -> None:
    name = f"cdc_{cdc}"
    password = database_settings(postgres_server.url)["database.password"]
    shown = connect.get_config(name)  # what anyone who reaches Connect's REST API reads
    path = password_file_of(SECRETS, name)
    assert shown["database.password"] == f"${{file:{path}:password}}"
    # msglab's own password is "msglab", the database's name too
    assert {key for key, value in shown.items() if value == password} <= {"database.dbname"}
    assert path.stat().st_mode & 0o077 == 0, "the password file is readable by others"
    assert connect.status(name).running  # the worker read the password from the file


def test_committed_messages_arrive_in_msglab_format_rolled_back_never(
    db: Engine, cdc: str, kafka_server: Any, unique_name: str
) -> None:
    topic = cdc
    reader = reading(kafka_server.url, topic, f"{unique_name}_g")
    sent: list[Message] = []
    committed_at: dict[str, float] = {}
    rolled_back: set[str] = set()
    try:
        for tx in range(40):
            batch = [
                Message(
                    f"payload {tx}.{i} \x00\xff".encode("latin-1"),
                    KEYS[(tx + i) % len(KEYS)],
                    {"tx": str(tx), "i": str(i)},
                )
                for i in range(5)
            ]
            if tx % 10 == 5:  # every tenth transaction rolls back
                write(db, topic, batch, commit=False)
                rolled_back |= {m.id for m in batch}
                continue
            at = write(db, topic, batch)
            sent += batch
            committed_at.update({m.id: at for m in batch})
            time.sleep(0.02)
        reader.wait_for(set(committed_at), 60)
        time.sleep(2.0)  # room for anything that should not come
    finally:
        reader.stop()
    first = first_arrivals(reader)
    lost = set(committed_at) - set(first)
    assert not lost, f"{len(lost)} committed messages never arrived"
    assert not rolled_back & set(first), "a rolled-back transaction's messages arrived"
    assert set(first) == set(committed_at)
    by_id = {m.id: m for m in sent}
    for mid, (got, _t) in first.items():
        want = by_id[mid]
        assert (got.payload, got.key) == (want.payload, want.key)
        assert got.headers == {"msglab-headers": got.headers["msglab-headers"]}
        assert expand_headers(got) == want
    assert reordered(first, sent) == 0
    latencies = sorted(t - committed_at[mid] for mid, (_m, t) in first.items())
    p50 = statistics.median(latencies)
    print(
        f"\ncdc: {len(first)} delivered, {reader.duplicates()} duplicates, commit->delivery "
        f"p50 {p50 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    assert reader.duplicates() == 0  # no fault: no duplicates


def test_connect_kill_loses_nothing_and_counts_duplicates(
    db: Engine,
    cdc: str,
    connect: ConnectClient,
    kafka_server: Any,
    msglab_infra: Backend,
    unique_name: str,
) -> None:
    topic = cdc
    reader = reading(kafka_server.url, topic, f"{unique_name}_g")
    sent: list[Message] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        n = 0
        try:
            while not stop.is_set():
                batch = [Message(f"m{n + i}".encode(), KEYS[(n + i) % len(KEYS)]) for i in range(2)]
                write(db, topic, batch)
                sent.extend(batch)
                n += len(batch)
                time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        time.sleep(3.0)  # streaming, offsets flushed a few times
        killed_pid = msglab_infra.kill("connect")
        killed_at = time.monotonic()
        time.sleep(1.0)  # rows keep being committed while the worker is dead
        report = msglab_infra.restart("connect")
        time.sleep(2.0)  # and after it is back
        stop.set()
        thread.join(30)
        assert not errors, errors
        back = connect.wait_running(f"cdc_{unique_name}", 90)
        assert back.running
        reader.wait_for({m.id for m in sent}, 120)
    finally:
        stop.set()
        reader.stop()
    first = first_arrivals(reader)
    lost = {m.id for m in sent} - set(first)
    unexpected = set(first) - {m.id for m in sent}
    print(
        f"\nconnect-kill: pid {killed_pid} SIGKILLed, worker back in {report.seconds:.1f}s "
        f"(last delivery {reader.arrived[-1] - killed_at:.1f}s after the kill); "
        f"committed {len(sent)}, delivered {len(first)}, lost {len(lost)}, "
        f"duplicates {reader.duplicates()}, reordered {reordered(first, sent)}"
    )
    assert len(lost) == 0, f"{len(lost)} committed messages lost after the Connect kill"
    assert not unexpected
    assert reordered(first, sent) == 0  # first deliveries stay in commit order per key
