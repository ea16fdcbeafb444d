"""``msglab cdc`` on the real servers: a table connector registered with the CLI streams a
table's inserts, updates and deletes to Kafka; decoded, they are Messages in commit order whose
ids let the idempotent consumer skip a redelivered change. One connector for the module
(Connect is slow to start a task); the error cases need none, or fail before one runs."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from typer.testing import CliRunner

from msglab.brokers import open_transport
from msglab.cdc import ConnectClient, drop_slot_sql, slot_name
from msglab.cdc.table import TableChange, decode_change, table_change_middleware
from msglab.cli import app
from msglab.config import ClientConfig
from msglab.consumers.idempotent import IdempotentConsumer
from msglab.db import engine
from msglab.message import Message
from msglab.testing.contract import Collector

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.connect]

runner = CliRunner()


def cli(*args: str) -> Any:
    """``msglab cdc ARGS`` in this process; raises what the command raised."""
    result = runner.invoke(app, ["cdc", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def slots(db: Engine) -> dict[str, bool]:
    with db.connect() as conn:
        rows = conn.execute(text("SELECT slot_name, active FROM pg_replication_slots"))
        return {str(name): bool(active) for name, active in rows}


@pytest.fixture(scope="module")
def posts(postgres_server: Any, connect_server: Any) -> Iterator[tuple[str, str, Engine]]:
    """A ``posts_<hex>`` table (REPLICA IDENTITY FULL: ``before`` holds the whole old row)
    and its connector, registered and at the end deleted with the CLI: (connector, topic,
    engine)."""
    table = f"posts_{uuid.uuid4().hex[:8]}"
    name = f"{table}-changes"
    db = engine(postgres_server.url)
    with db.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY, title text)"))
        conn.execute(text(f"ALTER TABLE {table} REPLICA IDENTITY FULL"))
    try:
        out = cli("register", "table", "--table", table).output
        assert f"connector {name} RUNNING" in out
        yield name, f"{name}.public.{table}", db
        out = cli("delete", name).output
        assert f"slot {slot_name(name)} dropped" in out, out
        assert slot_name(name) not in slots(db)
    finally:
        with ConnectClient(connect_server.url) as client:
            client.delete(name)
        if slot_name(name) in slots(db):
            with db.begin() as conn:
                conn.execute(text(drop_slot_sql(slot_name(name))))
        with db.begin() as conn:
            conn.execute(text(f"DROP TABLE {table}"))
        db.dispose()


def changes(db: Engine, table: str) -> None:
    """Two inserts, an update, a delete; each its own transaction."""
    for sql in (
        f"INSERT INTO {table} VALUES (1, 'first'), (2, 'second')",
        f"UPDATE {table} SET title = 'first, edited' WHERE id = 1",
        f"DELETE FROM {table} WHERE id = 2",
    ):
        with db.begin() as conn:
            conn.execute(text(sql))


def read(kafka_url: str, topic: str, count: int) -> list[Message]:
    """The first ``count`` records of ``topic`` (a new group, from the start), as delivered."""
    reader = Collector(
        open_transport("kafka", ClientConfig(url=kafka_url)), topic, uuid.uuid4().hex
    )
    try:
        arrived = _wait(reader, count)
    finally:
        reader.stop()
    assert arrived, f"{len(reader.deliveries)} of {count} records within 60 s"
    return [d.message for d in reader.deliveries[:count]]


def _wait(reader: Collector, count: int) -> bool:
    deadline = time.monotonic() + 60
    while len(reader.deliveries) < count and time.monotonic() < deadline:
        if reader.error is not None:
            raise reader.error
        time.sleep(0.1)
    return len(reader.deliveries) >= count


def test_changes_arrive_as_messages_in_commit_order_and_dedup_by_lsn_table_and_key(
    posts: tuple[str, str, Engine], kafka_server: Any
) -> None:
    _name, topic, db = posts
    table = topic.rsplit(".", 1)[1]
    changes(db, table)
    seen: list[Message] = []
    handle = table_change_middleware(seen.append)
    for record in read(kafka_server.url, topic, 4):
        handle(record)
    got = [TableChange.of(m) for m in seen]
    assert [(c.op, c.pk) for c in got] == [("c", "1"), ("c", "2"), ("u", "1"), ("d", "2")]
    assert got[0].before is None and got[0].after == {"id": 1, "title": "first"}
    assert got[2].before == {"id": 1, "title": "first"}
    assert got[2].after == {"id": 1, "title": "first, edited"}
    assert got[3].before == {"id": 2, "title": "second"} and got[3].after is None
    lsns = [c.lsn for c in got]
    assert lsns == sorted(lsns) and len(set(lsns)) == 4  # commit order, one LSN per change
    for m, c in zip(seen, got, strict=True):
        assert m.id == f"public.{table}:{c.lsn}:{c.pk}" and m.key == c.pk
        assert m.headers["cdc-op"] == c.op
    # a redelivery (another read of the same records) decodes to the same ids: applied once
    again = [decode_change(r) for r in read(kafka_server.url, topic, 4)]
    assert [m.id for m in again if m] == [m.id for m in seen]
    dedup = IdempotentConsumer(db, f"test-{uuid.uuid4().hex[:8]}")
    dedup.create_table()
    applied: list[str] = []

    def effect(conn: Connection, fresh: Any) -> None:
        applied.extend(m.id for m in fresh)

    assert len(dedup.handle(seen, effect)) == 4
    assert dedup.handle([m for m in again if m], effect) == []  # every change skipped
    assert applied == [m.id for m in seen]


def test_status_pause_resume_restart_and_offsets_through_the_cli(
    posts: tuple[str, str, Engine],
) -> None:
    name, _topic, _db = posts
    (row,) = json.loads(cli("status", name, "--json").output)
    assert (row["kind"], row["state"], row["slot_name"]) == ("table", "RUNNING", slot_name(name))
    assert row["slot"]["active"] and row["slot"]["lag_bytes"] >= 0
    assert row["slot"]["retained_bytes"] >= row["slot"]["lag_bytes"]
    table = cli("status").output
    assert name[:12] in table and "RUNNING" in table  # a long name folds
    assert max(len(line) for line in table.splitlines()) <= 80
    cli("pause", name)
    assert _state(name, "PAUSED")
    cli("resume", name)
    assert _state(name, "RUNNING")
    cli("restart", name)
    assert _state(name, "RUNNING")
    (offset,) = json.loads(cli("offsets", name, "--json").output)
    assert offset["partition"] == {"server": name} and offset["offset"]["lsn"] > 0


def _state(name: str, want: str, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        (row,) = json.loads(cli("status", name, "--json").output)
        if row["state"] == want and all(t["state"] == want for t in row["tasks"]):
            return True
        time.sleep(0.3)
    return False


def error_of(cli: Any, *args: str) -> tuple[int, str]:
    """Exit code and stderr of ``msglab cdc ARGS`` run as a user runs it; one line."""
    result = cli("cdc", *args, check=False)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return result.returncode, lines[0]


def test_bad_input_is_one_line_and_exit_2_before_anything_is_created(
    posts: tuple[str, str, Engine], postgres_server: Any, connect_server: Any, cli: Any
) -> None:
    name, topic, db = posts
    code, error = error_of(cli, "register", "table", "--table", "no_such_table")
    assert code == 2 and "table public.no_such_table does not exist" in error
    assert topic.rsplit(".", 1)[1] in error  # the tables there are named
    # a second connector on the slot the first one reads
    code, error = error_of(
        cli, "register", "table", "--table", topic.rsplit(".", 1)[1], "--name", "second",
        "--slot", slot_name(name),
    )  # fmt: skip
    assert code == 2 and f"replication slot {slot_name(name)} is in use" in error
    # a user without the REPLICATION attribute
    role = f"norepl_{uuid.uuid4().hex[:8]}"
    with db.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'"))
    try:
        port = postgres_server.url.rsplit(":", 1)[1].split("/")[0]
        url = f"postgresql://{role}:pw@127.0.0.1:{port}/msglab"
        code, error = error_of(cli, "register", "table", "--table", "x", "--db", url)
        assert code == 2 and f"user {role}" in error and "REPLICATION" in error
        assert ":pw@" not in error
    finally:
        with db.begin() as conn:
            conn.execute(text(f"DROP ROLE {role}"))
    with ConnectClient(connect_server.url) as client:
        assert "second" not in client.connectors()


def test_unreachable_servers_are_named_with_the_password_hidden(cli: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        code, error = error_of(
            cli, "register", "table", "--table", "t", "--db",
            f"postgresql://u:s3cret@127.0.0.1:{port}/db", "--connect", f"http://127.0.0.1:{port}",
        )  # fmt: skip
        assert code == 1 and f"postgresql: cannot connect to 127.0.0.1:{port}" in error
        assert "s3cret" not in error
        code, error = error_of(cli, "status", "--connect", f"http://u:s3cret@127.0.0.1:{port}")
        assert code == 1 and f"cannot connect to http://u:***@127.0.0.1:{port}" in error


def test_a_failed_task_is_one_line_with_the_workers_error(
    posts: tuple[str, str, Engine], postgres_server: Any, connect_server: Any, cli: Any
) -> None:
    """msglab's replication role may read the WAL but does not own the table, so Debezium
    cannot create the connector's publication: its task FAILS, and the error says why."""
    _name, topic, db = posts
    port = postgres_server.url.rsplit(":", 1)[1].split("/")[0]
    url = f"postgresql://msglab_replicator:msglab@127.0.0.1:{port}/msglab"
    name = f"fails-{uuid.uuid4().hex[:8]}"
    try:
        code, error = error_of(
            cli, "register", "table", "--table", topic.rsplit(".", 1)[1], "--name", name,
            "--db", url, "--timeout", "30",
        )  # fmt: skip
        assert code == 1 and f"connector {name} task 0 FAILED" in error
        assert "Unable to create filtered publication" in error and "\tat " not in error
        assert f"msglab cdc delete {name}" in error
    finally:
        with ConnectClient(connect_server.url) as client:
            client.delete(name)
        if slot_name(name) in slots(db):
            with db.begin() as conn:
                conn.execute(text(drop_slot_sql(slot_name(name))))
