"""``msglab cdc``: Debezium connectors on Kafka Connect for a team's own PostgreSQL: register,
status (with the replication slot's lag), pause, resume, restart, delete (with the slot),
offsets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from msglab.infra import service_url
from msglab.settings import Settings

if TYPE_CHECKING:
    from msglab.cdc import ConnectClient

app = typer.Typer(
    help="Debezium change data capture on your own PostgreSQL, through Kafka Connect: an "
    "outbox connector (msglab's outbox table) or a table connector (one table's changes).",
    no_args_is_help=True,
)
console = Console()

ConnectOpt = Annotated[
    str | None,
    typer.Option(
        "--connect",
        help="Kafka Connect's REST URL (default: MSGLAB_CONNECT_URL, else msglab's own worker).",
        show_default=False,
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="postgresql://user:password@host:port/db as the Connect worker reaches it "
        "(default: MSGLAB_POSTGRES_URL, else msglab's own PostgreSQL).",
        show_default=False,
    ),
]
NameArg = Annotated[str, typer.Argument(help="The connector's name.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", min=1.0, help="Seconds to wait for the connector.")
]


@contextmanager
def _client(connect: str | None) -> Iterator[ConnectClient]:
    from msglab.cdc import ConnectClient  # httpx: only for this command

    settings = Settings.from_env()
    url = connect or service_url(settings, "connect")
    with ConnectClient(url, connect_timeout_s=settings.connect_timeout_s) as client:
        yield client


def _db(db: str | None) -> str:
    return db or service_url(Settings.from_env(), "postgres")


def _secrets_dir(connect: str | None) -> Path | None:
    """msglab's own worker reads passwords from files in its secrets folder: use it, so that
    the connector's config (which Connect's REST API shows) holds a reference, not the
    password. Another worker gets the password in the config."""
    from msglab.infra.connect import Connect

    settings = Settings.from_env()
    own = Connect(settings)
    if "connect" in settings.external or (connect and connect.rstrip("/") != own.url):
        return None
    return own.secrets_dir if own.secrets_dir.is_dir() else None


@app.command()
def register(
    kind: Annotated[str, typer.Argument(help="outbox | table", show_default=False)],
    table: Annotated[
        str | None, typer.Option("--table", help="table: the [schema.]table to stream.")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Connector name (default: msglab-outbox, or <table>-changes)."),
    ] = None,
    db: DbOpt = None,
    connect: ConnectOpt = None,
    topic_prefix: Annotated[
        str | None,
        typer.Option(
            "--topic-prefix",
            help="Debezium's topic.prefix (default: the name); a table's changes go to "
            "<prefix>.<schema>.<table>.",
        ),
    ] = None,
    slot: Annotated[
        str | None, typer.Option("--slot", help="Replication slot (default: msglab_<name>).")
    ] = None,
    timeout: TimeoutOpt = 60.0,
) -> None:
    """Create (or update) a connector and wait until its task runs. The database is checked
    first: wal_level=logical, a user with REPLICATION, the table and its primary key, a
    replication slot nobody else reads."""
    from msglab.cdc.manage import register as create
    from msglab.cdc.table import qualified

    if name is None:
        name = f"{qualified(table).split('.')[1]}-changes" if table else "msglab-outbox"
    with _client(connect) as client:
        status = create(
            client,
            kind,
            name,
            _db(db),
            table=table,
            topic_prefix=topic_prefix,
            slot=slot,
            secrets_dir=_secrets_dir(connect),
            timeout_s=timeout,
        )
        config = client.get_config(name)
    where = (
        f"topic {config['topic.prefix']}.{config['table.include.list']}"
        if kind == "table"
        else "the topics its outbox rows name"
    )
    console.print(
        f"connector {name} {status.state}, slot {config['slot.name']}; changes go to {where}",
        highlight=False,
    )


def _size(n: int | None) -> str:
    """Bytes as ``512 B``, ``1.5 MiB``; ``-`` for none."""
    if n is None:
        return "-"
    if abs(n) < 1024:
        return f"{n} B"
    size, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if abs(size) < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"


@app.command()
def status(
    name: Annotated[
        str | None, typer.Argument(help="A connector (all when none).", show_default=False)
    ] = None,
    db: DbOpt = None,
    connect: ConnectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each connector's state and its tasks', and its replication slot: lag (WAL written
    since the connector last confirmed) and retained WAL (what PostgreSQL keeps for it)."""
    from msglab.cdc.manage import status as read

    with _client(connect) as client:
        rows = read(client, _db(db), [name] if name else [])
    if as_json:
        print(json.dumps([r.to_json() for r in rows]))
        return
    table = Table(title=f"{len(rows)} connector(s)", width=min(console.width, 80))
    table.add_column("connector", overflow="fold", ratio=1)
    for col in ("kind", "state", "tasks", "slot", "lag", "retained"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        slot = "-" if r.slot_name is None else ("active" if r.slot and r.slot.active else "idle")
        if r.slot_name and r.slot is None:
            slot = "missing"
        tasks = " ".join(f"{t.id}:{t.state}" for t in r.connector.tasks) or "none"
        lag = _size(r.slot.lag_bytes) if r.slot else "-"
        kept = _size(r.slot.retained_bytes) if r.slot else "-"
        table.add_row(r.connector.name, r.kind, r.connector.state, tasks, slot, lag, kept)
    console.print(table)
    for r in rows:
        if r.connector.failure:
            console.print(escape(r.connector.failure), highlight=False, soft_wrap=True)
        if r.slot_name and r.slot is None:
            console.print(f"{r.connector.name}: slot {r.slot_name} not found", highlight=False)


def _act(verb: str, name: str, connect: str | None) -> None:
    from msglab.errors import UsageError

    with _client(connect) as client:
        if not client.exists(name):
            raise UsageError(
                f"no connector {name} at {client.shown_url}; "
                f"connectors: {', '.join(sorted(client.connectors())) or 'none'}"
            )
        getattr(client, verb)(name)
    console.print(f"{verb}: {name}", highlight=False)


@app.command()
def pause(name: NameArg, connect: ConnectOpt = None) -> None:
    """Pause the connector: its task stops reading; the slot keeps the WAL until resumed."""
    _act("pause", name, connect)


@app.command()
def resume(name: NameArg, connect: ConnectOpt = None) -> None:
    """Resume a paused connector: it goes on from the last position it confirmed."""
    _act("resume", name, connect)


@app.command()
def restart(name: NameArg, connect: ConnectOpt = None) -> None:
    """Restart the connector and its tasks (a FAILED task runs again)."""
    _act("restart", name, connect)


@app.command()
def delete(
    name: NameArg,
    db: DbOpt = None,
    connect: ConnectOpt = None,
    keep_slot: Annotated[
        bool, typer.Option("--keep-slot", help="Keep the replication slot (it holds WAL).")
    ] = False,
) -> None:
    """Delete the connector and drop its replication slot (a slot left behind makes
    PostgreSQL keep WAL forever); when the slot cannot be dropped, say how to drop it."""
    from msglab.cdc.manage import delete as remove

    with _client(connect) as client:
        done = remove(
            client, name, _db(db), drop_slot=not keep_slot, secrets_dir=_secrets_dir(connect)
        )
    slot = (
        "no slot"
        if done.slot_name is None
        else f"slot {done.slot_name} " + ("dropped" if done.slot_dropped else "not found")
    )
    console.print(f"deleted: {name}; {done.hint or slot}", highlight=False, soft_wrap=True)


@app.command()
def offsets(name: NameArg, connect: ConnectOpt = None, as_json: JsonOpt = False) -> None:
    """The source offsets the connector committed (Kafka Connect's GET
    /connectors/NAME/offsets): for Debezium, the LSN it has published up to."""
    with _client(connect) as client:
        found: list[dict[str, Any]] = client.offsets(name)
    if as_json:
        print(json.dumps(found))
        return
    table = Table(title=f"{name}: {len(found)} source partition(s)", width=80)
    table.add_column("partition", overflow="fold")
    table.add_column("offset", overflow="fold")
    for o in found:
        table.add_row(json.dumps(o.get("partition")), json.dumps(o.get("offset")))
    console.print(table)
