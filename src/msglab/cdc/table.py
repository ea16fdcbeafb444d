"""CDC of a team's own table: Debezium's PostgreSQL connector streams every committed INSERT,
UPDATE and DELETE of one table to Kafka (no outbox, no EventRouter), and ``decode_change`` turns
each change event into a msglab ``Message``.

A change event, as the connector writes it (JsonConverter, ``schemas.enable=false``): the Kafka
key is the row's primary key as a JSON object (``{"id": 42}``), the value is
``{"before": row|null, "after": row|null, "op": "c"|"u"|"d"|"r", "source": {..., "lsn": N,
"schema": "public", "table": "posts"}, "ts_ms": N}`` (``r``: a row read by a snapshot).

The decoded Message (``decode_change``):

* ``id`` = ``<schema>.<table>:<lsn>:<pk>`` (``public.posts:24512344:42``; ``pk`` the primary key's
  values joined by ``,``): one id per change, the same id every time that change is delivered
  again. Each change of a transaction has its own LSN, and the rows a snapshot reads share its
  LSN but not their primary key, so (table, LSN, primary key) names one change: msglab's
  idempotent consumer, which dedups by message id, applies a redelivered change once.
* ``key`` = the primary key's values joined by ``,`` (``42``); records with one key go to one
  partition, so the changes of one row arrive in commit order.
* ``payload`` = JSON ``{"op", "table", "lsn", "ts_ms", "key", "before", "after"}`` (read it
  back with ``TableChange.of``); ``headers`` = ``cdc-op``, ``cdc-table``, ``cdc-lsn``.

Deletes arrive as ``op`` ``d`` with ``after`` null and ``before`` the old row. What ``before``
holds is the table's REPLICA IDENTITY: with the default only the primary key columns of a delete
(the others null) and nothing (null) for an update; ``ALTER TABLE t REPLICA IDENTITY FULL`` makes
PostgreSQL log the whole old row. No tombstones: the connector is configured with
``tombstones.on.delete=false``; a record with a null value (a tombstone of a connector configured
otherwise) decodes to None and the middleware skips it.

Delivery is at-least-once, as for the outbox connector (``msglab.cdc.outbox``): after a Connect
worker crash the changes since the last offset flush come again, with the same ids.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from msglab.cdc.connect import ConnectClient, ConnectorStatus
from msglab.cdc.outbox import (
    postgres_connector,
    start_connector,
)
from msglab.errors import ConfigError
from msglab.message import Message
from msglab.ports import Handler, Middleware

OPS = ("c", "u", "d", "r")
"""Debezium's operations: create (INSERT), update, delete, read (a snapshot's row)."""
OP_HEADER = "cdc-op"
TABLE_HEADER = "cdc-table"
LSN_HEADER = "cdc-lsn"

_IDENT = r"[A-Za-z_][A-Za-z0-9_$]*"


def qualified(table: str) -> str:
    """``posts`` -> ``public.posts``; ``app.posts`` stays; anything else is a ConfigError."""
    if not re.fullmatch(rf"{_IDENT}(\.{_IDENT})?", table):
        raise ConfigError(f"table {table!r}: give [schema.]table (letters, digits, '_', '$')")
    return table if "." in table else f"public.{table}"


def table_connector(
    name: str,
    database_url: str,
    table: str,
    *,
    topic_prefix: str | None = None,
    topic: str | None = None,
    slot: str | None = None,
    publication: str | None = None,
    snapshot_mode: str = "no_data",
    extra: Mapping[str, str] | None = None,
    password_file: Path | None = None,
) -> dict[str, str]:
    """The config of a Debezium PostgreSQL connector streaming ``table``'s changes.

    database_url: ``postgresql://user:password@host:port/db`` as the *worker* reaches it. The
        user needs the REPLICATION attribute and, to create the publication, ownership of the
        table.
    table: ``[schema.]table`` (schema ``public`` when left out); it must have a primary key.
    topic_prefix: Debezium's ``topic.prefix`` (default: ``name``); changes go to
        ``<prefix>.<schema>.<table>``.
    topic: route every change to this topic instead (a RegexRouter SMT).
    slot, publication, snapshot_mode, extra, password_file: as ``outbox_connector``'s.
    """
    prefix = topic_prefix or re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", prefix):
        raise ConfigError(f"topic prefix {prefix!r}: use letters, digits, '.', '_' or '-'")
    config = postgres_connector(
        name,
        database_url,
        qualified(table),
        prefix,
        slot,
        publication,
        snapshot_mode,
        password_file,
    )
    config |= {
        "skipped.operations": "t",  # TRUNCATE has no row, so no message id
        "tombstones.on.delete": "false",  # a delete is one record, never a null value after it
        "binary.handling.mode": "base64",
        "decimal.handling.mode": "string",  # exact, unlike a JSON double
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "false",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
    }
    if topic is not None:
        config["transforms"] = "route"
        config["transforms.route.type"] = "org.apache.kafka.connect.transforms.RegexRouter"
        config["transforms.route.regex"] = ".*"
        config["transforms.route.replacement"] = topic
    config.update(extra or {})
    return config


def start_table_connector(
    client: ConnectClient,
    name: str,
    database_url: str,
    table: str,
    *,
    timeout_s: float = 60.0,
    secrets_dir: Path | None = None,
    **options: Any,
) -> ConnectorStatus:
    """Create (or update) table connector ``name`` (``table_connector``'s ``options``) and
    wait until its task runs: from then on every committed change of ``table`` is streamed.
    ``secrets_dir`` as ``start_outbox_connector``'s; ``stop_outbox_connector`` stops either
    kind (and drops the slot). No check of the database first: ``msglab.cdc.manage.register``
    makes them."""
    return start_connector(
        client,
        name,
        database_url,
        partial(table_connector, table=table),
        timeout_s,
        secrets_dir,
        options,
    )


@dataclass(frozen=True)
class TableChange:
    """One change of one row. ``table`` is ``schema.table``; ``key`` the primary key columns."""

    op: str
    table: str
    lsn: int
    ts_ms: int
    key: Mapping[str, Any]
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None

    @property
    def pk(self) -> str:
        """The primary key's values joined by ``,``."""
        return ",".join(str(v) for v in self.key.values())

    @property
    def id(self) -> str:
        """``<schema>.<table>:<lsn>:<pk>``: the same for every delivery of this change."""
        return f"{self.table}:{self.lsn}:{self.pk}"

    @classmethod
    def of(cls, message: Message) -> TableChange:
        """The change a ``decode_change`` Message carries (its payload)."""
        b = json.loads(message.payload)
        return cls(b["op"], b["table"], b["lsn"], b["ts_ms"], b["key"], b["before"], b["after"])


def change_of(record: Message) -> TableChange | None:
    """The change a Debezium record carries; None for a tombstone (empty value). Raises
    ValueError naming the record when it is not a Debezium change event."""
    if not record.payload:
        return None
    try:
        value = json.loads(record.payload)
        key = json.loads(record.key) if record.key else None
        source = value["source"]
        op = value["op"]
        if op not in OPS or not isinstance(key, dict) or not key:
            raise ValueError(f"op {op!r}, key {record.key!r}")
        return TableChange(
            op=op,
            table=f"{source['schema']}.{source['table']}",
            lsn=int(source["lsn"]),
            ts_ms=int(value["ts_ms"]),
            key=key,
            before=value.get("before"),
            after=value.get("after"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"record {record.id} is not a Debezium change event of a table with a primary "
            f"key: {exc}"
        ) from exc


def to_message(change: TableChange, id_column: str | None = None) -> Message:
    """The Message of ``change`` (see the module). ``id_column``: take the id from this column
    of the row (``after``, or ``before`` for a delete) instead: for a table whose rows carry
    a message id of their own (the lab's ``lab_orders.message_id``)."""
    mid = change.id
    if id_column is not None:
        row = change.after if change.after is not None else change.before
        if not row or row.get(id_column) is None:
            raise ValueError(f"change {change.id} has no column {id_column!r}")
        mid = str(row[id_column])
    body = {
        "op": change.op,
        "table": change.table,
        "lsn": change.lsn,
        "ts_ms": change.ts_ms,
        "key": dict(change.key),
        "before": change.before,
        "after": change.after,
    }
    headers = {OP_HEADER: change.op, TABLE_HEADER: change.table, LSN_HEADER: str(change.lsn)}
    return Message(json.dumps(body).encode(), change.pk, headers, mid)


def decode_change(record: Message, id_column: str | None = None) -> Message | None:
    """A Debezium table-change record as a msglab Message (see the module); None for a
    tombstone. ValueError for a record that is not a change event."""
    change = change_of(record)
    return None if change is None else to_message(change, id_column)


def change_decoder(id_column: str | None = None) -> Middleware:
    """Middleware: the handler sees each record through ``decode_change`` (with
    ``id_column``), and never sees a tombstone (it is acknowledged unhandled)."""

    def middleware(handler: Handler) -> Handler:
        def decoded(record: Message) -> None:
            message = decode_change(record, id_column)
            if message is not None:
                handler(message)

        return decoded

    return middleware


table_change_middleware: Callable[[Handler], Handler] = change_decoder()
"""Middleware: the handler sees table changes as Messages whose id is
``<schema>.<table>:<lsn>:<pk>`` (the idempotent consumer's dedup key); tombstones skipped."""
