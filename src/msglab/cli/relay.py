"""``msglab relay``: the transactional outbox's relay on a team's own database, until stopped.

``msglab relay -t kafka --db postgresql://...`` publishes the ``msglab_outbox`` rows that a
service's transactions commit (``msglab.outbox.Outbox.add``), in order per key, with any number
of relays (``--instances``, or more processes); ``msglab relay status`` shows the backlog.
The first SIGTERM or Ctrl-C lets each relay finish and mark its pass, then exits; a second
exits at once (what was published and not yet marked goes again: at-least-once).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from msglab.cli.service import log_to_stderr, stop_on_signals
from msglab.config import parse_duration
from msglab.errors import UsageError

LOG = logging.getLogger("msglab.relay")
DB_ENV = "MSGLAB_DB_URL"
DEFAULT_DB = "sqlite:///msglab.db"
PROGRESS_S = 10.0
"""How often the running relay logs a line of what it did."""

app = typer.Typer(
    help="The transactional outbox's relay on your own database: run it, or see its backlog.",
    no_args_is_help=False,
)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help=f"The outbox's database: postgresql://user:password@host:port/db or "
        f"sqlite:///file.db (default: ${DB_ENV}, else {DEFAULT_DB}).",
    ),
]
TopicsOption = Annotated[
    list[str] | None, typer.Option("--topics", help="Only these topics' rows (repeatable).")
]


def _open(db_url: str | None, create: bool) -> Any:
    """The engine, with the outbox table there (created with ``create``), or a UsageError
    saying how to create it."""
    from msglab.db import engine, has_table
    from msglab.outbox import Outbox

    url = db_url or os.environ.get(DB_ENV) or DEFAULT_DB
    db = engine(url)
    if create:
        Outbox(db).create_table()
    elif not has_table(db, "msglab_outbox"):
        raise UsageError(
            f"no msglab_outbox table in {db.url.render_as_string()}: create it with "
            f"'msglab relay --create-table --db ...' (or Outbox(engine).create_table())"
        )
    return db


@app.callback(invoke_without_command=True)
def relay(
    ctx: typer.Context,
    transport: Annotated[
        str | None, typer.Option("-t", "--transport", help="Where to publish (kafka, ...).")
    ] = None,
    db: DbOption = None,
    profile: Annotated[
        str, typer.Option(help="at-least-once (mark after the confirm) or at-most-once.")
    ] = "at-least-once",
    topics: TopicsOption = None,
    batch: Annotated[int, typer.Option(min=1, help="Rows per pass.")] = 1000,
    instances: Annotated[
        int,
        typer.Option(
            min=1,
            help="Relays in this process, each its share of the keys (threads: order and "
            "failover; for throughput run more processes).",
        ),
    ] = 1,
    keep: Annotated[
        str,
        typer.Option(
            help="Keep sent rows (marked sent) this long (7d, 12h, 30m), then delete them in "
            "small batches; 0 deletes each row once published; 'forever' keeps them."
        ),
    ] = "0",
    poll: Annotated[
        float | None,
        typer.Option(help="Seconds between polls (default 1 with wake on commit, else 0.05)."),
    ] = None,
    listen: Annotated[
        bool, typer.Option(help="Wake on commit (PostgreSQL's LISTEN/NOTIFY).")
    ] = True,
    create_table: Annotated[
        bool, typer.Option("--create-table", help="Create the outbox table if it is missing.")
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (published, errors, "
            "backlog, oldest unsent row's age).",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run the outbox relay until SIGTERM or Ctrl-C (`msglab relay -t kafka --db
    postgresql://...`): publishes the rows your transactions commit, in order per key, then
    marks them sent. PostgreSQL: several relays share the keys and a commit wakes them at
    once; SQLite: one writer, polled."""
    if ctx.invoked_subcommand is not None:
        return
    from msglab.cli.messaging import build
    from msglab.outbox import Relay

    if transport is None:
        raise UsageError("-t/--transport: where to publish (kafka, rabbitmq, redis-streams, ...)")
    log_to_stderr(log_level)
    keep_s = None if keep == "forever" else parse_duration(keep)
    broker = build(transport, profile)  # an unknown name fails here, before the database
    engine = _open(db, create_table)
    if instances > 1 and engine.dialect.name == "sqlite":
        LOG.warning("SQLite has one writer: %d relays take turns, a pass each", instances)
    publishers = [broker.publisher() for _ in range(instances)]
    relays = [
        Relay(
            engine,
            publisher,
            batch_size=batch,
            poll_s=poll,
            mark_first=profile == "at-most-once",
            topics=topics,
            keep_s=keep_s,
            listen=listen,
        )
        for publisher in publishers
    ]
    exporting = None
    if metrics_port is not None:
        from msglab.metrics.exporter import export_relays

        exporting = export_relays(metrics_port, relays, relays[0].backlog)
        LOG.info("metrics on http://127.0.0.1:%d/metrics", exporting.port)
    stop = stop_on_signals(LOG, "finishing the batch in hand (unmarked rows would go again)")
    threads = [
        threading.Thread(target=r.run, args=(stop,), name=f"relay-{i}")
        for i, r in enumerate(relays)
    ]
    for t in threads:
        t.start()
    LOG.info(
        "relaying %s from %s to %s (%d relay(s), batch %d)",
        ", ".join(topics) if topics else "every topic",
        engine.url.render_as_string(),
        transport,
        instances,
        batch,
    )
    _progress(relays, stop)
    for t in threads:
        t.join()
    for publisher in publishers:
        publisher.close()
    if exporting is not None:
        exporting.close()
    published = sum(r.stats.published for r in relays)
    LOG.info("stopped: %d published", published)


def _progress(relays: list[Any], stop: threading.Event) -> None:
    """A line every ``PROGRESS_S`` while something happened: published, rate, backlog."""
    last, at = 0, time.monotonic()
    while not stop.wait(PROGRESS_S):
        published = sum(r.stats.published for r in relays)
        now = time.monotonic()
        if published == last:
            continue
        try:
            backlog = relays[0].backlog()
            left = f"{backlog.unsent} unsent, oldest {backlog.oldest_s:.1f}s"
        except Exception as exc:  # the relays log the database's state themselves
            left = f"backlog unknown ({type(exc).__name__})"
        owned = [len(r.shares.owned) for r in relays if r.shares is not None]
        shares = f", key shares {'/'.join(map(str, owned))}" if owned else ""
        LOG.info(
            "published %d (%.0f/s), %s%s",
            published,
            (published - last) / (now - at),
            left,
            shares,
        )
        last, at = published, now


@app.command()
def status(
    db: DbOption = None,
    topics: TopicsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """The outbox's backlog: unsent rows, the age of the oldest, sent rows kept."""
    from sqlalchemy import func, select

    from msglab.outbox import OUTBOX
    from msglab.outbox.store import store_for

    engine = _open(db, create=False)
    with engine.begin() as conn:
        backlog = store_for(engine, topics).backlog(conn)
        rows = conn.execute(select(func.count()).select_from(OUTBOX)).scalar_one()
    result: dict[str, Any] = {
        "database": engine.url.render_as_string(),
        "topics": ", ".join(topics) if topics else "all",
        "unsent": backlog.unsent,
        "oldest_unsent_s": round(backlog.oldest_s, 3),
    }
    if not topics:  # the table's rows: unsent, or sent and kept (--keep)
        result["sent_kept"] = rows - backlog.unsent
    if as_json:
        print(json.dumps(result))
        return
    table = Table(show_header=False, box=None)
    for name, value in result.items():
        table.add_row(name.replace("_", " "), str(value))
    Console().print(table)
