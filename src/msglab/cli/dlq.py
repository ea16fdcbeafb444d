"""``msglab dlq list | show | replay | purge``: a topic's dead letters (``<topic>.dlq``)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from msglab.brokers import TRANSPORTS
from msglab.cli.messaging import ProfileOpt

app = typer.Typer(
    help="A topic's dead letters (TOPIC.dlq, written by `msglab worker`): list, show, replay "
    "(to the origin topic, same message id), purge.",
    no_args_is_help=True,
)
console = Console()

TransportOpt = Annotated[
    str, typer.Option("--transport", "-t", help=f"One of {', '.join(TRANSPORTS)}.")
]
TopicOpt = Annotated[str, typer.Option("--topic", help="The origin topic (its dead letters).")]
IdsOpt = Annotated[
    list[str] | None, typer.Option("--id", help="A dead letter's message id (repeatable).")
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every dead letter of the topic.")]
WaitOpt = Annotated[
    float,
    typer.Option(min=0.5, help="Seconds to wait for the first dead letter (a Kafka group joins)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _box(transport: str, topic: str, profile: str, wait: float) -> Any:
    from msglab.app.dlq import DeadLetterBox
    from msglab.brokers import open_transport
    from msglab.cli.messaging import build
    from msglab.config import check_name

    check_name("topic", topic)
    config = build(transport, profile).config
    return DeadLetterBox(lambda c: open_transport(transport, c), config, topic, wait_s=wait)


def _json(entry: Any) -> dict[str, Any]:
    if entry.record is not None:
        return dict(entry.record.to_json())
    m = entry.stored
    return {"id": m.id, "key": m.key, "headers": dict(m.headers), "malformed": True}


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


@app.command("list")
def list_(
    transport: TransportOpt,
    topic: TopicOpt,
    profile: ProfileOpt = "at-least-once",
    wait: WaitOpt = 15.0,
    as_json: JsonOpt = False,
) -> None:
    """The dead letters of TOPIC, oldest first: id, handler, attempts, error (nothing changes)."""
    entries = _box(transport, topic, profile, wait).list()
    if as_json:
        print(json.dumps([_json(e) for e in entries]))
        return
    table = Table(title=f"{len(entries)} dead letter(s) in {transport}:{topic}.dlq")
    table.add_column("id", no_wrap=True, min_width=32)  # whole: it is what --id takes
    for col in ("group / handler", "tries", "last failure (UTC)", "error"):
        table.add_column(col, overflow="fold")
    for e in entries:
        if e.record is None:
            table.add_row(e.id, "-", "-", "-", "(no msglab- headers)")
            continue
        f = e.record.failure
        error = f"{f.error_type}: {f.error}"
        table.add_row(
            e.id,
            f"{f.group} / {f.handler}",
            str(f.attempt),
            _when(f.last_failure),
            error if len(error) <= 80 else error[:77] + "...",
        )
    console.print(table)


@app.command()
def show(
    transport: TransportOpt,
    topic: TopicOpt,
    ids: IdsOpt = None,
    profile: ProfileOpt = "at-least-once",
    wait: WaitOpt = 15.0,
    as_json: JsonOpt = False,
) -> None:
    """Every field of the dead letters --id names: the original message and why it failed."""
    from msglab.errors import UsageError

    if not ids:
        raise UsageError("msglab dlq show: name a dead letter with --id")
    entries = _box(transport, topic, profile, wait).list()
    found = {e.id: e for e in entries}
    missing = [i for i in ids if i not in found]
    if missing:
        raise UsageError(f"no dead letter with id {', '.join(missing)} in {topic}.dlq")
    shown = [_json(found[i]) for i in ids]
    if as_json:
        print(json.dumps(shown))
        return
    for one in shown:
        console.print_json(json.dumps(one))


def _change(
    kind: str,
    transport: str,
    topic: str,
    ids: list[str] | None,
    every: bool,
    profile: str,
    wait: float,
    as_json: bool,
) -> None:
    from msglab.errors import UsageError

    if bool(ids) == every:
        raise UsageError(f"msglab dlq {kind}: name dead letters with --id, or say --all")
    box = _box(transport, topic, profile, wait)
    changed = box.replay(ids or None) if kind == "replay" else box.purge(ids or None)
    done = {"replay": "replayed", "purge": "purged"}[kind]
    if as_json:
        print(json.dumps({done: changed.done, "kept": changed.kept}))
        return
    where = f"to {topic}" if kind == "replay" else f"from {topic}.dlq"
    console.print(f"{done} {len(changed.done)} dead letter(s) {where}; {changed.kept} kept")


@app.command()
def replay(
    transport: TransportOpt,
    topic: TopicOpt,
    ids: IdsOpt = None,
    every: AllOpt = False,
    profile: ProfileOpt = "at-least-once",
    wait: WaitOpt = 15.0,
    as_json: JsonOpt = False,
) -> None:
    """Publish dead letters to their origin topic again as the original messages (same id:
    an idempotent consumer applies each once) and remove them from TOPIC.dlq. An --id that is
    not there is refused before anything changes."""
    _change("replay", transport, topic, ids, every, profile, wait, as_json)


@app.command()
def purge(
    transport: TransportOpt,
    topic: TopicOpt,
    ids: IdsOpt = None,
    every: AllOpt = False,
    profile: ProfileOpt = "at-least-once",
    wait: WaitOpt = 15.0,
    as_json: JsonOpt = False,
) -> None:
    """Remove dead letters from TOPIC.dlq for good."""
    _change("purge", transport, topic, ids, every, profile, wait, as_json)
