"""Debezium connectors on a team's own database, as ``msglab cdc`` runs them: register (with
the database checked first), status (with the replication slot's lag), delete (with the slot).

Each function takes a ``ConnectClient`` and the database URL the *worker* reaches (the same
URL is used from here to check the database and read the slot: msglab's servers and a
developer's machine see one address).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msglab.cdc import database
from msglab.cdc.connect import ConnectClient, ConnectorError, ConnectorStatus
from msglab.cdc.outbox import (
    OUTBOX_TABLE,
    drop_slot_sql,
    outbox_connector,
    password_file_of,
    write_password_file,
)
from msglab.cdc.table import qualified, table_connector
from msglab.errors import ConnectError, UsageError

KINDS = ("outbox", "table")
"""What ``register`` creates: ``outbox`` publishes msglab's outbox table in msglab's Kafka
format (``msglab.cdc.outbox``); ``table`` streams one table's changes (``msglab.cdc.table``)."""

DEBEZIUM_POSTGRES = "io.debezium.connector.postgresql.PostgresConnector"


def kind_of(config: dict[str, str]) -> str:
    """``outbox``, ``table``, or the short class name of a connector that is neither."""
    if config.get("connector.class") != DEBEZIUM_POSTGRES:
        return config.get("connector.class", "?").rsplit(".", 1)[-1]
    routers = [k for k, v in config.items() if k.endswith(".type") and "EventRouter" in v]
    return "outbox" if routers else "table"


def register(
    client: ConnectClient,
    kind: str,
    name: str,
    database_url: str,
    *,
    table: str | None = None,
    topic_prefix: str | None = None,
    slot: str | None = None,
    secrets_dir: Path | None = None,
    timeout_s: float = 60.0,
) -> ConnectorStatus:
    """Create (or update) connector ``name`` of ``kind`` and wait until its task runs.

    Before anything is created: the database is checked (``database.check_source``: logical
    WAL, REPLICATION, the table and its primary key) and, for a new connector, its slot must be
    free (``database.check_slot_free``). ``secrets_dir``: a folder the worker's
    FileConfigProvider reads (msglab's own worker); the password goes there, not into the
    config. A task that FAILED raises ConnectorError with the first lines of its trace."""
    if kind not in KINDS:
        raise UsageError(f"unknown connector kind {kind!r}; valid: {', '.join(KINDS)}")
    if kind == "table" and not table:
        raise UsageError("register table: name the table with --table [schema.]table")
    if kind == "outbox" and table not in (None, OUTBOX_TABLE):
        raise UsageError(f"register outbox reads {OUTBOX_TABLE}; --table is for `table`")
    watched = OUTBOX_TABLE if kind == "outbox" else qualified(str(table))
    password_file = password_file_of(secrets_dir, name) if secrets_dir else None
    options: dict[str, Any] = {"slot": slot, "password_file": password_file}
    if kind == "outbox":
        config = outbox_connector(name, database_url, **options)
        if topic_prefix:
            config["topic.prefix"] = topic_prefix
    else:
        config = table_connector(name, database_url, watched, topic_prefix=topic_prefix, **options)
    database.check_source(database_url, watched)
    if not (
        client.exists(name) and client.get_config(name).get("slot.name") == config["slot.name"]
    ):
        database.check_slot_free(database_url, config["slot.name"])
    if secrets_dir is not None:
        write_password_file(secrets_dir, name, database_url)
    client.put_config(name, config)
    try:
        return client.wait_running(name, timeout_s)
    except ConnectorError as exc:
        raise ConnectorError(
            f"{exc}; fix it, then `msglab cdc restart {name}`, or `msglab cdc delete {name}`"
        ) from exc


@dataclass(frozen=True)
class CdcStatus:
    """A connector's state, its tasks', and its replication slot (None: none found)."""

    connector: ConnectorStatus
    kind: str
    slot_name: str | None
    slot: database.Slot | None

    def to_json(self) -> dict[str, Any]:
        c = self.connector
        return {
            "name": c.name,
            "kind": self.kind,
            "state": c.state,
            "worker_id": c.worker_id,
            "trace": c.trace,
            "tasks": [
                {"id": t.id, "state": t.state, "worker_id": t.worker_id, "trace": t.trace}
                for t in c.tasks
            ],
            "slot_name": self.slot_name,
            "slot": self.slot.to_json() if self.slot else None,
        }


def status(client: ConnectClient, database_url: str, names: list[str]) -> list[CdcStatus]:
    """Each connector of ``names`` (every connector when empty): its state and its slot's
    lag, read from the database at ``database_url``. An unknown name is a UsageError listing
    the connectors there are."""
    known = client.connectors()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"no connector {', '.join(unknown)} at {client.shown_url}; "
            f"connectors: {', '.join(sorted(known)) or 'none'}"
        )
    configs = {n: client.get_config(n) for n in names or sorted(known)}
    slot_of = {n: c.get("slot.name") for n, c in configs.items()}
    wanted = [s for s in slot_of.values() if s]
    found = database.slots(database_url, wanted) if wanted else {}
    return [
        CdcStatus(client.status(n), kind_of(c), slot_of[n], found.get(slot_of[n] or ""))
        for n, c in configs.items()
    ]


@dataclass(frozen=True)
class Deleted:
    """What ``delete`` did: ``slot`` dropped (True), absent (False), or left (``hint`` says
    how to drop it)."""

    name: str
    slot_name: str | None
    slot_dropped: bool
    hint: str | None = None


def delete(
    client: ConnectClient,
    name: str,
    database_url: str,
    *,
    drop_slot: bool = True,
    secrets_dir: Path | None = None,
    timeout_s: float = 30.0,
) -> Deleted:
    """Delete connector ``name``, then (``drop_slot``) its replication slot once its task let
    go of it, and (``secrets_dir``) its password file. A slot that cannot be dropped (the
    database unreachable, still read) is left, and ``hint`` says how to drop it by hand: a
    slot left behind makes PostgreSQL keep WAL for it forever."""
    if not client.exists(name):
        raise UsageError(
            f"no connector {name} at {client.shown_url}; "
            f"connectors: {', '.join(sorted(client.connectors())) or 'none'}"
        )
    slot = client.get_config(name).get("slot.name")
    client.delete(name)
    client.wait_gone(name, timeout_s)
    if secrets_dir is not None:
        password_file_of(secrets_dir, name).unlink(missing_ok=True)
    if not slot:
        return Deleted(name, None, False)
    how = f"drop it as a superuser or its replication user: {drop_slot_sql(slot)}"
    if not drop_slot:
        return Deleted(name, slot, False, f"replication slot {slot} kept (it holds WAL); {how}")
    try:
        return Deleted(name, slot, database.drop_slot(database_url, slot, timeout_s))
    except (UsageError, ConnectorError, ConnectError) as exc:
        return Deleted(name, slot, False, f"replication slot {slot} left ({exc}); {how}")
