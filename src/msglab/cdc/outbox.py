"""CDC of msglab's outbox table: Debezium reads committed ``msglab_outbox`` rows from
PostgreSQL's WAL and its outbox ``EventRouter`` turns each into a Kafka record in msglab's
Kafka wire format, so that msglab's Kafka subscriber reads them as if msglab had published them.

How a row becomes a record (``outbox_connector``):

==========================  ====================================================================
``msglab_outbox`` column    Kafka record
==========================  ====================================================================
``topic``                   the topic (``route.by.field=topic``,
                            ``route.topic.replacement=${routedByValue}``)
``key``                     the key, UTF-8 (``table.field.event.key=key``, StringConverter)
``payload`` (bytea)         the value, the raw bytes (``table.field.event.payload=payload``,
                            ByteArrayConverter)
``id``                      header ``msglab-id`` (``table.fields.additional.placement=
                            id:header:msglab-id``; the router's own ``id`` header is dropped)
``headers`` (jsonb)         header ``msglab-headers``: the JSON object as text. EventRouter cannot
                            spread a JSON map into one Kafka header per entry (its additional
                            fields are whole columns), so a consumer that wants the message's
                            own headers back applies ``expand_headers`` (or the middleware
                            ``expand_headers_middleware``); pass ``headers_header=None`` to
                            leave them out
==========================  ====================================================================

Only INSERTs are published. UPDATEs and DELETEs of the table are skipped at the source
(``skipped.operations=u,d,t``), so rows may be deleted once captured to keep the table small.
msglab's outbox *relay* marks rows sent with an UPDATE, and publishes them itself: run either the
relay or CDC on an outbox, never both (every message would be published twice).

Rows committed before the connector first started are not published (``snapshot.mode=no_data``:
the slot starts where it is created); pass ``snapshot_mode="initial"`` to publish those too.

Delivery contract: **at-least-once**, in commit order per key. Debezium publishes a row only once
its transaction committed (a rolled-back transaction publishes nothing) and reads the WAL in
commit order; records with the same key go to the same partition. Connect commits the position it
has published up to (the LSN) every ``offset.flush.interval.ms`` (msglab's worker: 1000 ms, see
``msglab.infra.connect.OFFSET_FLUSH_INTERVAL_MS``); after a crash of the worker it resumes from
the last committed position, so what it published since then is **published again**: duplicates,
bounded by one flush interval's worth of events, never losses while the replication slot lives.
Consumers dedup on the message id (the ``msglab-id`` header), e.g. with msglab's idempotent
consumer.

The replication slot holds WAL until the connector confirms it: a connector deleted without
dropping its slot makes PostgreSQL keep WAL forever and blocks a new connector with the same
slot. ``stop_outbox_connector`` drops it; ``drop_slot_sql`` is the manual way out.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from msglab.cdc.connect import ConnectClient, ConnectorError, ConnectorStatus
from msglab.config import redact_url
from msglab.errors import ConfigError
from msglab.message import Message
from msglab.ports import Handler

OUTBOX_TABLE = "public.msglab_outbox"
ID_HEADER = "msglab-id"
"""The header carrying the message id, as msglab's Kafka transport writes and reads it."""
HEADERS_HEADER = "msglab-headers"
"""The header carrying the row's ``headers`` JSON object (see ``expand_headers``)."""
SNAPSHOT_MODES = ("no_data", "initial", "when_needed", "always", "initial_only")

_SLOT_MAX = 63  # PostgreSQL's identifier limit (NAMEDATALEN - 1)


def slot_name(name: str) -> str:
    """A replication slot name for connector ``name``: lowercase letters, digits and ``_``."""
    slot = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    if not slot:
        raise ConfigError(f"cannot derive a replication slot name from {name!r}")
    return f"msglab_{slot}"[:_SLOT_MAX]


def check_slot(slot: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]{1,63}", slot):
        raise ConfigError(
            f"replication slot name {slot!r}: use 1-63 lowercase letters, digits or '_'"
        )
    return slot


def database_settings(database_url: str) -> dict[str, str]:
    """Debezium's ``database.*`` settings from ``postgresql://user:password@host:port/db``."""
    parts, shown = urlsplit(database_url), redact_url(database_url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg") or not parts.hostname:
        raise ConfigError(f"not a PostgreSQL URL: {shown!r}")
    database = parts.path.lstrip("/")
    if not database or not parts.username:
        raise ConfigError(f"the PostgreSQL URL names no database or user: {shown!r}")
    try:
        port = parts.port or 5432
    except ValueError:
        raise ConfigError(f"the PostgreSQL URL has an invalid port: {shown!r}") from None
    return {
        "database.hostname": parts.hostname,
        "database.port": str(port),
        "database.user": unquote(parts.username),
        "database.password": unquote(parts.password or ""),
        "database.dbname": unquote(database),
    }


def postgres_connector(
    name: str,
    database_url: str,
    table: str,
    prefix: str,
    slot: str | None,
    publication: str | None,
    snapshot_mode: str,
    password_file: Path | None,
) -> dict[str, str]:
    """What every msglab connector of Debezium's PostgreSQL connector says (the outbox's and a
    table's): the database, its slot (default ``msglab_<name>``) and filtered publication
    (default ``<slot>_pub``) for ``table`` only, ``topic.prefix``, the snapshot mode, the
    password as a file reference when ``password_file`` is given."""
    slot = check_slot(slot if slot is not None else slot_name(name))
    if snapshot_mode not in SNAPSHOT_MODES:
        raise ConfigError(f"snapshot mode {snapshot_mode!r}; valid: {', '.join(SNAPSHOT_MODES)}")
    return {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        **database_settings(database_url),
        **({"database.password": f"${{file:{password_file}:password}}"} if password_file else {}),
        "plugin.name": "pgoutput",
        "slot.name": slot,
        "publication.name": publication or f"{slot}_pub",
        "publication.autocreate.mode": "filtered",
        "table.include.list": table,
        "topic.prefix": prefix,
        "snapshot.mode": snapshot_mode,
        # no "__debezium.context.*" headers on each record: msglab's format has none
        "extended.headers.enabled": "false",
        # Debezium hands a batch to Connect at the latest after this (default 500 ms)
        "poll.interval.ms": "100",
        # the slot is dropped on purpose only (stop_outbox_connector, msglab cdc delete):
        # dropping it on every stop would lose what is committed while the connector is
        # stopped or restarted
        "slot.drop.on.stop": "false",
        # topics the connector names are created with the broker's defaults
        "topic.creation.default.replication.factor": "-1",
        "topic.creation.default.partitions": "-1",
    }


def outbox_connector(
    name: str,
    database_url: str,
    *,
    topics: Sequence[str] | None = None,
    slot: str | None = None,
    publication: str | None = None,
    headers_header: str | None = HEADERS_HEADER,
    snapshot_mode: str = "no_data",
    extra: Mapping[str, str] | None = None,
    password_file: Path | None = None,
) -> dict[str, str]:
    """The config of a Debezium PostgreSQL connector publishing ``public.msglab_outbox``.

    database_url: ``postgresql://user:password@host:port/db`` as the *worker* reaches it. The
        user needs the REPLICATION attribute and, to create the publication, ownership of the
        table (the table's owner or a superuser).
    topics: publish only rows whose ``topic`` is one of these (a Filter SMT after the router);
        None publishes every row.
    slot: the replication slot (default ``msglab_<name>``); one per connector.
    publication: the PostgreSQL publication (default ``<slot>_pub``), created for the outbox
        table only (``publication.autocreate.mode=filtered``).
    headers_header: the header that carries the row's ``headers`` JSON (None: not carried).
    snapshot_mode: ``no_data`` (only rows committed after the slot exists) or another Debezium
        ``snapshot.mode`` (``initial`` also publishes the rows already in the table).
    extra: more connector settings, applied last.
    password_file: a properties file with ``password=`` that the Connect worker reads through
        its FileConfigProvider (alias ``file``): the config then says
        ``${file:<path>:password}``, so Connect's REST API and config topic never hold the
        password (``write_password_file``). None: the password is in the config itself.
    """
    placement = f"id:header:{ID_HEADER}"
    if headers_header:
        placement += f",headers:header:{headers_header}"
    prefix = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    config = postgres_connector(
        name, database_url, OUTBOX_TABLE, prefix, slot, publication, snapshot_mode, password_file
    )
    config |= {
        "skipped.operations": "u,d,t",
        "tombstones.on.delete": "false",
        "binary.handling.mode": "bytes",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
        "header.converter": "org.apache.kafka.connect.storage.SimpleHeaderConverter",
        "transforms": "outbox,dropRouterId",
        "transforms.outbox.type": "io.debezium.transforms.outbox.EventRouter",
        "transforms.outbox.table.field.event.id": "id",
        "transforms.outbox.table.field.event.key": "key",
        "transforms.outbox.table.field.event.payload": "payload",
        "transforms.outbox.table.fields.additional.placement": placement,
        "transforms.outbox.table.expand.json.payload": "false",
        "transforms.outbox.route.by.field": "topic",
        "transforms.outbox.route.topic.replacement": "${routedByValue}",
        "transforms.outbox.route.tombstone.on.empty.payload": "false",
        "transforms.outbox.table.op.invalid.behavior": "warn",
        # EventRouter always adds the event id as header "id"; msglab's is "msglab-id"
        "transforms.dropRouterId.type": "org.apache.kafka.connect.transforms.DropHeaders",
        "transforms.dropRouterId.headers": "id",
    }
    if topics is not None:
        if not topics:
            raise ConfigError("topics: give at least one topic, or None for every topic")
        config["transforms"] += ",onlyTopics"
        config["transforms.onlyTopics.type"] = "org.apache.kafka.connect.transforms.Filter"
        config["transforms.onlyTopics.predicate"] = "isWanted"
        config["transforms.onlyTopics.negate"] = "true"  # drop what is NOT wanted
        config["predicates"] = "isWanted"
        config["predicates.isWanted.type"] = (
            "org.apache.kafka.connect.transforms.predicates.TopicNameMatches"
        )
        config["predicates.isWanted.pattern"] = "|".join(re.escape(t) for t in topics)
    config.update(extra or {})
    return config


def password_file_of(secrets_dir: Path, name: str) -> Path:
    """Where connector ``name``'s password file lives in ``secrets_dir``."""
    return secrets_dir / f"{name}.properties"


def write_password_file(secrets_dir: Path, name: str, database_url: str) -> Path:
    """Write the password of ``database_url`` to ``<secrets_dir>/<name>.properties`` (mode
    0600, only its owner reads it), for the worker's FileConfigProvider; its path."""
    password = database_settings(database_url)["database.password"]
    escaped = password.replace("\\", "\\\\")  # a properties file's one escape character
    if escaped[:1].isspace():
        escaped = "\\" + escaped  # leading white space would be dropped
    path = password_file_of(secrets_dir, name)
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"password={escaped}\n")
    return path


def start_outbox_connector(
    client: ConnectClient,
    name: str,
    database_url: str,
    *,
    timeout_s: float = 60.0,
    secrets_dir: Path | None = None,
    **options: Any,
) -> ConnectorStatus:
    """Create (or update) the outbox connector ``name`` and wait until it and its task run.

    ``options`` are ``outbox_connector``'s. ``secrets_dir``: a folder the Connect worker reads
    through its FileConfigProvider (msglab's own worker: ``Connect.secrets_dir``); the
    password goes to a file there instead of into the connector's config, which Connect's REST
    API shows to anyone who can reach it. Once this returns the replication slot exists:
    every outbox row committed from then on is published (at-least-once, see the module).
    Raises ConnectorError with the task's trace when it fails, ConnectError when Connect is
    unreachable."""
    return start_connector(
        client, name, database_url, outbox_connector, timeout_s, secrets_dir, options
    )


def start_connector(
    client: ConnectClient,
    name: str,
    database_url: str,
    config_of: Callable[..., dict[str, str]],
    timeout_s: float,
    secrets_dir: Path | None,
    options: dict[str, Any],
) -> ConnectorStatus:
    """Put connector ``name``'s config (``config_of(name, database_url, **options)``, the
    password in a file of ``secrets_dir`` when given) and wait until its task runs."""
    if secrets_dir is not None:
        options["password_file"] = write_password_file(secrets_dir, name, database_url)
    client.put_config(name, config_of(name, database_url, **options))
    return client.wait_running(name, timeout_s)


def stop_outbox_connector(
    client: ConnectClient,
    name: str,
    *,
    drop_slot: bool = True,
    timeout_s: float = 60.0,
    secrets_dir: Path | None = None,
) -> bool:
    """Delete the connector ``name``, (``drop_slot``) its replication slot and (``secrets_dir``)
    its password file; False if there was no such connector.

    The slot is dropped by the connector's own task as it stops: the config is first updated
    with ``slot.drop.on.stop=true`` and the task restarted with it, then the connector is
    deleted. When the task cannot run (FAILED, or the worker is down) the slot stays: drop it
    with ``drop_slot_sql(slot)``."""
    try:
        if not client.exists(name):
            return False
        if drop_slot:
            config = client.get_config(name)  # as stored: a password file stays a reference
            if config.get("slot.drop.on.stop") != "true":
                config["slot.drop.on.stop"] = "true"
                client.put_config(name, config)
                _wait_tasks_reconfigured(client, name, timeout_s)
        client.delete(name)
        client.wait_gone(name, timeout_s)
        return True
    finally:
        if secrets_dir is not None:
            password_file_of(secrets_dir, name).unlink(missing_ok=True)


def _wait_tasks_reconfigured(client: ConnectClient, name: str, timeout_s: float) -> None:
    """Wait until the task runs with ``slot.drop.on.stop=true``."""
    deadline = time.monotonic() + timeout_s
    while True:
        tasks = client.task_configs(name)
        if tasks and all(t.get("slot.drop.on.stop") == "true" for t in tasks):
            break
        if time.monotonic() > deadline:
            raise ConnectorError(f"connector {name}: tasks not reconfigured after {timeout_s}s")
        time.sleep(0.2)
    # the new task configs are stored before the old task is stopped and the new one started
    time.sleep(1.0)
    client.wait_running(name, max(1.0, deadline - time.monotonic()))


def drop_slot_sql(slot: str) -> str:
    """SQL that drops replication slot ``slot`` if it exists and no connector uses it."""
    check_slot(slot)
    return (
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        f"WHERE slot_name = '{slot}' AND NOT active"
    )


def expand_headers(message: Message, header: str = HEADERS_HEADER) -> Message:
    """The message with the JSON object in ``header`` spread back into its own headers (as
    msglab's outbox relay would have published them); unchanged without that header. A header
    that is not a JSON object of strings is left as it is."""
    headers = dict(message.headers)
    raw = headers.pop(header, None)
    if raw is None:
        return message
    try:
        carried = json.loads(raw)
    except ValueError:
        return message
    if not isinstance(carried, dict) or not all(isinstance(v, str) for v in carried.values()):
        return message
    return Message(message.payload, message.key, {**carried, **headers}, message.id)


def expand_headers_middleware(handler: Handler) -> Handler:
    """Middleware: ``handler`` sees each message through ``expand_headers``."""

    def expanded(message: Message) -> None:
        handler(expand_headers(message))

    return expanded
