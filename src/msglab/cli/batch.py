"""``msglab batch send | receive | status``: the file batch exchange (``msglab.exchange``).

Push: the consumer owns an inbox folder (``receive --from DIR`` creates it), producers write
into it (``send --to DIR``). Pull: the producer owns an outbox folder (``send --outbox DIR``
creates it), each consumer group takes every batch from it (``receive --from DIR --group G``).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from msglab.cli.service import log_to_stderr, stop_on_signals
from msglab.config import parse_duration
from msglab.errors import UsageError

app = typer.Typer(
    help="The file batch exchange: send a JSON Lines file as batches into a folder, receive "
    "them with a command or an App, see a folder's status.",
    no_args_is_help=True,
)
console = Console()
LOG = logging.getLogger("msglab.batch")

TopicOpt = Annotated[str, typer.Option("--topic", help="The topic: a folder in DIR.")]


@app.command()
def send(
    source: Annotated[
        str, typer.Argument(metavar="FILE|-", help="A JSON Lines file, or - for stdin.")
    ],
    to: Annotated[
        Path | None,
        typer.Option("--to", help="Push: the consumer's inbox (it must exist: receive makes it)."),
    ] = None,
    outbox: Annotated[
        Path | None,
        typer.Option("--outbox", help="Pull: this producer's own outbox (made if missing)."),
    ] = None,
    topic: TopicOpt = "batches",
    batch: Annotated[int, typer.Option("--batch", min=1, help="Records per batch file.")] = 1000,
    keep: Annotated[
        str | None,
        typer.Option(help="--outbox: then delete its batches older than this (30m, 12h, 7d)."),
    ] = None,
) -> None:
    """Send a JSON Lines file (one JSON object a line; each line's bytes are one record) as
    batches of --batch records. The whole file is checked first: a bad line is named and
    nothing is sent. An outbox's retention is its producer's (--keep): batches older than it
    go, read or not."""
    from msglab.config import ClientConfig
    from msglab.exchange import folder
    from msglab.exchange.send import records
    from msglab.exchange.send import send as write

    if (to is None) == (outbox is None):
        raise UsageError("give one of --to INBOX (push) and --outbox DIR (pull)")
    if keep is not None and to is not None:
        raise UsageError(
            "--keep with --to: an inbox's retention is its consumer's (receive --keep)"
        )
    keep_s = None if keep is None else parse_duration(keep)
    root = (to or outbox or Path()).absolute()
    name = "<stdin>" if source == "-" else source
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"{source}: {exc.strerror or exc}") from exc
    lines = records(data, name, ClientConfig(url="file:///").max_payload_bytes)
    if to is not None:
        folder.check_inbox(root)
    else:
        folder.claim(root, folder.OUTBOX)
    sent = write(root, topic, lines, batch)
    print(f"sent {sent.records} record(s) in {sent.batches} batch(es) to {sent.folder}")
    if keep_s is not None:
        print(f"deleted {folder.expire_outbox(root / topic, keep_s)} batch(es) older than {keep}")


@app.command()
def receive(
    source: Annotated[
        Path, typer.Option("--from", help="The exchange folder (an inbox is made if missing).")
    ],
    exec_: Annotated[
        str | None,
        typer.Option("--exec", help="A shell command run once per batch, its records on stdin."),
    ] = None,
    app_: Annotated[
        str | None,
        typer.Option("--app", metavar="MODULE:APP", help="An App whose handlers use files."),
    ] = None,
    topic: TopicOpt = "batches",
    group: Annotated[str, typer.Option("--group", help="The consumer group (--exec).")] = "batch",
    attempts: Annotated[
        int, typer.Option(min=1, help="--exec: runs of a failing batch before it is set aside.")
    ] = 3,
    retry_delay: Annotated[
        float, typer.Option(min=0, help="--exec: seconds between two runs of a batch.")
    ] = 1.0,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.001, help="--exec: seconds a run may take; then it is killed (a failed run)."
        ),
    ] = 600.0,
    keep: Annotated[
        str | None,
        typer.Option(help="An inbox: delete processed batches older than this (30m, 12h, 7d)."),
    ] = None,
    grace: Annotated[
        float, typer.Option(min=0, help="--app: seconds the handlers get after a stop.")
    ] = 10.0,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Hand every batch of DIR/TOPIC to a command (--exec: exit 0 processes the batch; another
    exit runs it again, up to --attempts, then sets it aside with its stderr's tail) or to an
    App (--app, as msglab worker). In an inbox, processed batches move to DIR/TOPIC/processed/;
    an outbox is left as it is. SIGTERM or
    Ctrl-C: the batch in hand finishes, then it exits; a second one exits at once."""
    from msglab.app.loader import load_app
    from msglab.exchange import folder
    from msglab.exchange.receive import Exec, run_app, run_exec

    if (exec_ is None) == (app_ is None):
        raise UsageError("give one of --exec CMD and --app MODULE:APP")
    log_to_stderr(log_level)
    keep_s = None if keep is None else parse_duration(keep)
    root = source.absolute()
    if not root.exists():
        folder.claim(root, folder.INBOX)
    elif folder.mode_of(root) is None:
        raise UsageError(f"{root} has no {folder.MARKER}: not an exchange folder")
    elif keep is not None and folder.mode_of(root) == folder.OUTBOX:
        raise UsageError(
            f"--keep: {root} is an outbox, its producer's; it sets the retention "
            f"(msglab batch send --outbox {root} --keep {keep})"
        )
    stop = stop_on_signals(LOG, "finishing the batch in hand, then stopping")
    if exec_ is not None:
        run_exec(root, topic, group, Exec(exec_, attempts, retry_delay, timeout), keep_s, stop)
    elif not run_app(root, load_app(app_ or ""), keep_s, stop, grace):
        raise typer.Exit(1)


@app.command()
def status(
    root: Annotated[Path, typer.Argument(metavar="DIR", help="The exchange folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Count each topic's batches: pending, in progress, processed, quarantined (with the
    reasons)."""
    from msglab.exchange import folder

    topics = folder.status(root.absolute())
    mode = folder.mode_of(root.absolute())
    if as_json:
        print(json.dumps({"folder": str(root), "mode": mode, "topics": list(map(asdict, topics))}))
        return
    counts = Table(title=f"{root} ({mode or 'no marker'})", title_justify="left")
    for column in ("topic", "pending", "in progress", "processed", "quarantined"):
        counts.add_column(column, justify="left" if column == "topic" else "right")
    for t in topics:
        row = (t.pending, t.in_progress, t.processed, len(t.quarantined))
        counts.add_row(t.topic, *map(str, row))
    console.print(counts)
    quarantined = [q for t in topics for q in t.quarantined]
    if quarantined:
        reasons = Table(title="quarantined", title_justify="left", width=min(console.width, 80))
        for column in ("topic", "batch", "group", "reason"):
            reasons.add_column(column, overflow="fold", no_wrap=column == "batch")
        for q in quarantined:
            reasons.add_row(q.topic, q.batch, q.group or "(all)", q.reason)
        console.print(reasons)
