"""``msglab bench publish|consume|relay``: msglab beside the raw client, same job, same process
(the relay: beside a drain without a broker)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from msglab.bench import BenchResult, bench_consume, bench_publish
from msglab.cli.messaging import (
    ClusterOpt,
    JsonOpt,
    ProfileOpt,
    SizeOpt,
    TransportOpt,
    build,
    cluster_label,
)
from msglab.errors import UsageError
from msglab.infra import service_url
from msglab.settings import Settings

app = typer.Typer(
    help="Throughput of msglab's transports beside the raw clients.", no_args_is_help=True
)
console = Console(stderr=True)
MessagesOpt = Annotated[int, typer.Option("--messages", "-n", min=100, help="Messages per run.")]


def show(result: BenchResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.to_json()))
        return
    out = Console()
    table = Table(
        title=f"bench {result.operation}: {result.transport}"
        + (f" on {result.cluster}" if result.cluster else "")
        + f" {result.profile}, {result.messages} x {result.size} B"
    )
    for col in ("client", "msgs/s", "MB/s", "msglab / this"):
        table.add_column(col, justify="right")
    headline = "msglab batches" if result.variants else "msglab"
    table.add_row(
        f"[bold]{headline}[/]",
        f"{result.msglab_msgs_per_s:,.0f}",
        f"{result.mb_per_s(result.msglab_msgs_per_s):.2f}",
        "",
    )
    rows = {**result.variants, **result.baselines}
    for name, rate in rows.items():
        marker = " (same settings)" if name == result.raw_name else ""
        table.add_row(
            f"{name}{marker}",
            f"{rate:,.0f}",
            f"{result.mb_per_s(rate):.2f}",
            f"{result.msglab_msgs_per_s / rate:.2f}x" if rate else "-",
        )
    out.print(table)
    for name, (tenth, end) in result.rss_mb.items():
        out.print(f"{name}: RSS {tenth:.0f} MB at a tenth of the messages, {end:.0f} MB at all")


@app.command()
def publish(
    transport: TransportOpt,
    profile: ProfileOpt = "at-least-once",
    messages: MessagesOpt = 20000,
    size: SizeOpt = 100,
    rounds: Annotated[int, typer.Option(min=1)] = 5,
    cluster: ClusterOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Publish throughput: msglab vs the raw client (best of ROUNDS each)."""
    t = build(transport, profile, cluster=cluster)
    with console.status("benchmarking") as status:
        result = bench_publish(
            transport,
            t.config,
            messages,
            size,
            rounds,
            progress=lambda what: status.update(f"publishing: {what}"),
            cluster=cluster_label(transport, cluster),
        )
    show(result, as_json)


@app.command()
def consume(
    transport: TransportOpt,
    profile: ProfileOpt = "at-least-once",
    messages: MessagesOpt = 20000,
    size: SizeOpt = 100,
    rounds: Annotated[int, typer.Option(min=1)] = 5,
    cluster: ClusterOpt = False,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker",
            help="Also drain through the App runtime (msglab worker: retry, dead-letter and "
            "metrics middleware), with a batch handler and a per-message one.",
        ),
    ] = False,
    effectively_once: Annotated[
        bool,
        typer.Option(
            "--effectively-once",
            help="With --worker: also the runtime behind the idempotent consumer (a dedup row "
            "per message in msglab's PostgreSQL, one transaction per batch).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Consume throughput (first to last message): msglab vs the raw client (median of ROUNDS
    each, every drain by a fresh consumer group)."""
    if effectively_once and not worker:
        raise UsageError("--effectively-once is a form of --worker: add --worker")
    t = build(transport, profile, cluster=cluster)
    workers = None
    if worker:
        from msglab.bench_worker import worker_drains

        db_url = service_url(Settings.from_env(), "postgres") if effectively_once else None
        workers = worker_drains(transport, db_url)
    with console.status("benchmarking") as status:
        result = bench_consume(
            transport,
            t.config,
            messages,
            size,
            rounds,
            progress=lambda what: status.update(f"consuming: {what}"),
            cluster=cluster_label(transport, cluster),
            workers=workers,
        )
    show(result, as_json)


@app.command()
def relay(
    transport: TransportOpt,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="The outbox's database (default: msglab's PostgreSQL; sqlite:///file.db for "
            "SQLite's figures).",
        ),
    ] = None,
    messages: MessagesOpt = 100_000,
    batch: Annotated[int, typer.Option(min=1, help="Rows per relay pass.")] = 1000,
    instances: Annotated[
        list[int] | None,
        typer.Option(
            "--instances", min=1, help="Relays at once, a process each (repeatable; default 1, 2)."
        ),
    ] = None,
    rounds: Annotated[int, typer.Option(min=1)] = 2,
    rate: Annotated[
        float, typer.Option(min=1, help="Commits per second for the latency measurement.")
    ] = 1000.0,
    seconds: Annotated[float, typer.Option(min=1, help="How long the latency runs.")] = 5.0,
    as_json: JsonOpt = False,
) -> None:
    """The outbox relay: rows/s draining a filled outbox (raw: no broker; then into
    TRANSPORT; deleting or marking sent rows; 1 and 2 relays), and commit-to-publish latency
    at RATE commits/s, woken by each commit (LISTEN/NOTIFY) and polling every 50 ms."""
    from msglab.bench_relay import RelayBench, bench_relay_drain, bench_relay_latency, prepare
    from msglab.config import redact_url

    url = db or service_url(Settings.from_env(), "postgres")
    t = build(transport, "at-least-once")
    counts = instances or [1, 2]
    if url.startswith("sqlite") and counts != [1]:
        counts = [1]  # one writer: more relays take turns
    result = RelayBench(transport, redact_url(url), messages, batch, rate=rate)
    prepare(url)
    with console.status("benchmarking") as status:
        note = lambda what: status.update(f"relay: {what}")  # noqa: E731
        # the latency first: the drains leave the table with dead rows for autovacuum to clear
        result.latency_ms = bench_relay_latency(t, url, rate, seconds, progress=note)
        result.drains = bench_relay_drain(t, url, messages, batch, counts, rounds, progress=note)
    if as_json:
        print(json.dumps(result.to_json()))
        return
    out = Console()
    table = Table(title=f"outbox relay into {transport} ({messages} rows, batch {batch})")
    table.add_column("drain")
    table.add_column("rows/s", justify="right")
    table.add_column("vs raw", justify="right")
    for name, per_s in result.drains.items():
        label, _, rest = name.partition(" ")
        raw = result.drains.get(f"raw {rest}")
        ratio = f"{per_s / raw:.2f}x" if raw and label != "raw" else ""
        table.add_row(name, f"{per_s:,.0f}", ratio)
    out.print(table)
    lat = Table(title=f"commit to publish at {rate:.0f} commits/s (ms)")
    for column in ("wake", "p50", "p99", "max", "missing"):
        lat.add_column(column, justify="left" if column == "wake" else "right")
    for mode, figures in result.latency_ms.items():
        lat.add_row(mode, *(f"{figures[k]:g}" for k in ("p50", "p99", "max", "missing")))
    out.print(lat)
