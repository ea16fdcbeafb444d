"""``msglab run`` (one delivery experiment with a fault), ``msglab compare`` (the claim matrix)
and ``msglab probe`` (one measured experiment), on the real servers.

Each command names the pip extras it needs before it starts (a probe: ``run_probe``), and
imports the modules that use the drivers (``lab.run``, ``lab.compare``) only then, so that
``msglab --help`` needs none."""

from __future__ import annotations

import json
import signal
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import rich.box
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from msglab import extras
from msglab.brokers import CLUSTER_OF
from msglab.errors import UsageError
from msglab.lab.checker import ALARMING, MEASURES, shown
from msglab.lab.faults import FAULTS
from msglab.lab.faults.cluster import CUTS, PARTITIONS
from msglab.lab.knobs import KNOBS
from msglab.lab.matrix import FULL, Probe, Row
from msglab.lab.probes import PROBES, run_probe
from msglab.lab.scenario import PATTERNS, Scenario, fault_label, transport_label
from msglab.lab.summary import probes, runs
from msglab.lab.workloads import WORKLOADS
from msglab.settings import Settings

console = Console()


def interrupt_on_signals() -> None:
    """Ctrl-C and SIGTERM stop the run cleanly (workers killed, evidence kept), even when the
    shell started msglab with SIGINT ignored (a background job)."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def show(report: dict[str, Any]) -> None:
    table = Table(
        title=f"{transport_label(report)} {report['profile']}, {fault_label(report)}",
        caption=f"run {report['run_id']}",
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, label in MEASURES:
        value = report.get(key)
        if not shown(key, value, report.get("pattern", "direct")):
            continue
        bad = key in ALARMING and value
        table.add_row(label, f"[bold red]{value}[/]" if bad else str(value))
    table.add_row("latency ms p50 / p95 / p99 / max", _percentiles(report["latency_ms"]))
    if report.get("replayed") is not None:
        table.add_row("second group: distinct messages read", str(report["replayed"]))
        table.add_row(
            "second group: ms from send p50 / p95 / p99 / max",
            _percentiles(report["second_group_latency_ms"]),
        )
    console.print(table)
    if report["verdict"] == "kept":
        console.print(f"[green]promise kept[/]: {report['promise']}")
    else:
        console.print(
            f"[bold yellow]FINDING: promise broken[/] ({report['promise']}): "
            f"lost {report['lost']}, duplicate effects {report['duplicate_effects']}"
            + (f", phantom {report['phantom']}" if report.get("phantom") else "")
        )
    for f in report["faults"]:
        console.print(f"  fault: {f['action']} {f['target']} ({f['fault']})")
    if report.get("simulated"):
        console.print(f"[dim]{report['simulated']}[/]")
    console.print(f"evidence: {report['evidence_dir']}")
    console.print(f"report: {Path(report['evidence_dir']) / 'report.html'}")


def _percentiles(lat: dict[str, float]) -> str:
    return f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f}"


def run(
    transport: Annotated[str, typer.Option("--transport", "-t")],
    profile: Annotated[str, typer.Option("--profile", "-p")] = "at-least-once",
    fault: Annotated[str, typer.Option(help=f"One of {', '.join(FAULTS)}.")] = "none",
    workload: Annotated[
        str, typer.Option(help=f"What the consumers do: {', '.join(WORKLOADS)}.")
    ] = "none",
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="A server or client setting for this run, KEY=VALUE (repeatable): "
            + "; ".join(f"{k.key}={k.choices}" for k in KNOBS.values()),
        ),
    ] = None,
    pattern: Annotated[
        str, typer.Option(help=f"How messages reach the broker: {', '.join(PATTERNS)}.")
    ] = "direct",
    messages: Annotated[int, typer.Option("--messages", "-n", min=1)] = 2000,
    rate: Annotated[
        float, typer.Option(help="Messages/s over all producers; 0 = unbounded.")
    ] = 0.0,
    producers: Annotated[int, typer.Option(min=1)] = 1,
    consumers: Annotated[int, typer.Option(min=1)] = 1,
    keys: Annotated[int, typer.Option(min=1)] = 8,
    size: Annotated[int, typer.Option(min=0)] = 100,
    batch: Annotated[
        int,
        typer.Option(
            min=0,
            help="Messages per publish call (a business transaction under every pattern but "
            "direct); 0 = 20 ms of the rate, or all at once when unbounded.",
        ),
    ] = 0,
    seed: int = 1,
    kill_after: Annotated[int, typer.Option(help="Fault after this many sends/effects.")] = 0,
    down: Annotated[
        float, typer.Option(help="Seconds a killed broker stays down, or a network fault lasts.")
    ] = 2.0,
    latency_ms: Annotated[
        float, typer.Option(help="Delay each way of the latency fault (ms).")
    ] = 300.0,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="Run on the transport's replicated cluster ("
            + ", ".join(f"{t}: {c}" for t, c in CLUSTER_OF.items())
            + "); PostgreSQL stays single.",
        ),
    ] = False,
    partition: Annotated[
        str,
        typer.Option(help=f"What --fault partition cuts: {', '.join(PARTITIONS)}."),
    ] = "leader",
    cut: Annotated[
        str,
        typer.Option(help=f"Whose power --fault power-cut --cluster cuts: {', '.join(CUTS)}."),
    ] = "leader",
    relays: Annotated[
        int,
        typer.Option(min=1, help="--pattern outbox: relays at once (relay-kill kills one)."),
    ] = 1,
    relay_ordering: Annotated[
        str,
        typer.Option(
            help="--pattern outbox: keys (each relay its share of the keys: order per key) or "
            "skip-locked (each takes the next unlocked rows: the naive way)."
        ),
    ] = "keys",
    runs_dir: Annotated[Path, typer.Option(help="Where run folders go.")] = Path("runs"),
    times: Annotated[
        int,
        typer.Option(
            "--repeat",
            min=1,
            help="Run the scenario this many times, each a fresh run (same seed), into one "
            "folder; then: in how many runs something was lost, and how much.",
        ),
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run one scenario (producers and consumers as processes, the fault on the real server)
    and check what was lost, duplicated and reordered. A broken promise is a finding (exit 0).
    With --repeat N: N runs of it, one line each, and what they add up to."""
    interrupt_on_signals()
    scenario = Scenario(
        transport=transport,
        profile=profile,
        fault=fault,
        workload=workload,
        sets=tuple(sets or ()),
        pattern=pattern,
        messages=messages,
        rate=rate,
        producers=producers,
        consumers=consumers,
        keys=keys,
        size=size,
        batch=batch,
        seed=seed,
        kill_after=kill_after,
        down_s=down,
        latency_ms=latency_ms,
        cluster=cluster,
        partition=partition,
        cut=cut,
        relays=relays,
        relay_ordering=relay_ordering,
    )
    extras.require(*scenario.extras, what=f"msglab run -t {transport}")
    if times > 1:
        run_repeated(scenario, times, runs_dir, as_json)
        return
    from msglab.lab.run import run as run_scenario

    if as_json:
        report = run_scenario(scenario, runs_dir=runs_dir)
        print(json.dumps(report))
        return
    with _bar() as bar:
        task = bar.add_task("starting", total=1.0)
        report = run_scenario(
            scenario,
            runs_dir=runs_dir,
            progress=lambda stage, done: bar.update(task, description=stage, completed=done),
        )
    show(report)


def _bar() -> Progress:
    """A run's progress bar in a terminal: its stage, the share sent, the time."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def run_repeated(scenario: Scenario, times: int, runs_dir: Path, as_json: bool) -> None:
    """``msglab run --repeat N``: a line per finished run (not with --json), then the table of
    the runs and what they add up to; Ctrl-C shows the runs that finished, then aborts."""
    from msglab.lab.repeat import Interrupted
    from msglab.lab.repeat import repeat as repeat_scenario

    try:
        if as_json:
            doc = repeat_scenario(scenario, times, runs_dir=runs_dir)
        elif console.is_terminal:
            with _bar() as bar:
                task = bar.add_task("starting", total=float(times))

                def stage(i: int, n: int, stage: str, done: float) -> None:  # over all the runs
                    bar.update(task, description=f"run {i + 1}/{n}: {stage}", completed=i + done)

                doc = repeat_scenario(
                    scenario, times, runs_dir=runs_dir, progress=stage, finished=_print_repetition
                )
        else:  # a log or a pipe: a line per finished run, so that progress shows
            doc = repeat_scenario(scenario, times, runs_dir=runs_dir, finished=_print_repetition)
    except Interrupted as stop:
        show_repeat(stop.doc, runs_dir, as_json)
        raise
    show_repeat(doc, runs_dir, as_json)


def repetition_line(i: int, n: int, report: dict[str, Any]) -> str:
    """One line for run i (from 0) of n of a repetition: its id, the confirmed messages it
    lost (and the broker did not keep, where measured), its duplicate effects, its verdict."""
    stored = report.get("lost_from_storage")
    return (
        f"[{i + 1:>{len(str(n))}}/{n}] {report['run_id']}: lost {report['lost']} of "
        f"{report['confirmed']}"
        + ("" if stored is None else f", not kept {stored}")
        + f", dups {report['duplicate_effects']}, {report['verdict']}"
    )


def _print_repetition(i: int, n: int, report: dict[str, Any]) -> None:
    print(repetition_line(i, n, report), flush=True)


def show_repeat(doc: dict[str, Any], runs_dir: Path, as_json: bool) -> None:
    """``repeat.json`` as JSON, or its table, its findings and where its files are."""
    from msglab.lab.repeat import findings

    if as_json:
        print(json.dumps(doc))
        return
    console.print(repeat_table(doc, console.width))
    for line in findings(doc):
        console.print(line, highlight=False)
    for left in doc["left_out"]:
        console.print(f"[yellow]left out[/] {left['folder']}: {left['reason']}")
    folder = runs_dir / doc["repeat_id"]
    for what, name in (("report", "report.html"), ("data", "repeat.json")):  # paths kept whole
        console.print(f"{what}: {folder / name}", soft_wrap=True, highlight=False)


REPEAT_WIDE = (
    ("run_id", "run"),
    ("sent", "sent"),
    ("confirmed", "conf."),
    ("delivered", "deliv."),
    ("lost", "lost"),
    ("lost_from_storage", "not kept"),
    ("unconfirmed_lost", "unconf."),
    ("duplicate_effects", "dups"),
    ("reordered", "reord."),
    ("seconds", "s"),
)
REPEAT_NARROW = (
    ("run_id", "run"),
    ("confirmed", "conf."),
    ("lost", "lost"),
    ("lost_from_storage", "not kept"),
    ("duplicate_effects", "dups"),
)
"""The columns of the table of a repetition's runs, by key of ``repeat.json``'s runs: every
count when the terminal is wide enough, else (80 columns) the run and what it lost and
duplicated. ``not kept`` (lost from storage) only where the runs measured it."""


def repeat_table(doc: dict[str, Any], width: int) -> Table:
    """The runs of a repetition (``repeat.json``), one line each and a line of totals, as one
    table that fits ``width`` columns."""
    summary = doc["summary"]
    totals = {key: (stats or {}).get("total") for key, stats in summary["counts"].items()}
    totals |= {"run_id": "all", "seconds": summary["seconds"]}
    for columns, box in ((REPEAT_WIDE, rich.box.HEAVY_HEAD), (REPEAT_NARROW, None)):
        shown = [(k, h) for k, h in columns if k != "lost_from_storage" or totals[k] is not None]
        title = (
            f"{transport_label(doc)} {doc['profile']}, {fault_label(doc)}: "
            f"{summary['runs']} of {doc['requested']} runs"
        )
        # as wide as its title (the title would wrap to the table's width), within ``width``
        table = Table(title=title, box=box, pad_edge=False, min_width=min(len(title), width))
        for key, header in (("#", "#"), *shown, ("verdict", "verdict")):
            table.add_column(header, justify="left" if key in ("run_id", "verdict") else "right")
        for i, r in enumerate(doc["runs"], 1):
            verdict = "[green]kept[/]" if r["verdict"] == "kept" else "[bold red]broken[/]"
            table.add_row(str(i), *(_cell(k, r[k]) for k, _ in shown), verdict)
        if doc["runs"]:
            table.add_section()
            broken = summary["runs_broken"]
            table.add_row(
                "", *(_cell(k, totals[k]) for k, _ in shown), f"{broken} broken" if broken else ""
            )
        if Console(width=1000).measure(table).maximum <= width:
            break
    return table


def _cell(key: str, value: Any) -> str:
    if key == "seconds":
        return f"{value:.1f}"
    return f"[bold red]{value}[/]" if key in ALARMING and value else str(value)


def compare(
    quick: Annotated[bool, typer.Option("--quick/--full", help="Quick: small runs.")] = True,
    out: Annotated[Path, typer.Option(help="Folder for compare.json, report.html, runs.")] = Path(
        "runs/compare"
    ),
    clusters: Annotated[
        bool,
        typer.Option(
            "--clusters",
            help="The cluster matrix instead: faults of a replicated cluster's nodes, each row "
            "run several times (fewer with --quick) beside its published figure.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the claim matrix (docs/guarantees.md) on the real servers: one table, compare.json and a
    self-contained report.html with charts."""
    interrupt_on_signals()
    extras.require(*extras.ALL, what="msglab compare")
    from msglab.lab.compare import compare as matrix

    run_matrix = partial(matrix, clusters=clusters)
    if as_json:
        print(json.dumps(run_matrix(out, quick)))
        return
    if console.is_terminal:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("matrix", total=None)

            def advance(i: int, n: int, row: Row | Probe, result: dict[str, Any] | None) -> None:
                done = i + (result is not None)
                bar.update(task, total=n, completed=done, description=row.label)

            summary = run_matrix(out, quick, progress=advance)
    else:  # a log or a pipe: a line per finished row, so that progress shows
        summary = run_matrix(out, quick, progress=_print_finished)
    console.print(runs_table(summary, console.width))
    for i, row in enumerate(runs(summary), 1):
        console.print(f"[dim]{i:>2}. {row['claim']} (expect {row['expect']}){_price(row)}[/]")
        if row.get("published"):
            console.print(f"[dim]    published: {row['published']}[/]")
    _show_probes(probes(summary), first=len(runs(summary)) + 1)
    for skipped in summary["skipped"]:
        console.print(f"[yellow]skipped[/] {skipped['row']}: {skipped['reason']}")
    console.print(f"report: {out / 'report.html'}  data: {out / 'compare.json'}")


WIDE = (
    ("transport", "transport"),
    ("profile", "profile"),
    ("fault", "fault"),
    ("sent", "sent"),
    ("confirmed", "conf."),
    ("delivered", "deliv."),
    ("lost", "lost"),
    ("lost_from_storage", "stor."),
    ("duplicate_effects", "dups"),
    ("reordered", "reord."),
    ("p99", "p99 ms"),
    ("publish_per_s", "pub/s"),
)
NARROW = (
    ("run", "run"),
    ("sent", "sent"),
    ("lost", "lost"),
    ("lost_from_storage", "stor."),
    ("duplicate_effects", "dups"),
    ("reordered", "reord."),
)
"""The compare table's columns, by report key: every count when the terminal is wide enough,
else (80 columns, a log) what a run was and what it lost, duplicated and reordered; the rest
is in compare.json and report.html. ``stor.``: lost from storage (durability faults; else -)."""


FAULT_WIDTH = 34  # "partition leader-and-clients, acks=all" on two lines


def runs_table(summary: dict[str, Any], width: int) -> Table:
    """The lab runs of ``summary`` as one table that fits ``width`` columns."""
    for columns, box in ((WIDE, rich.box.HEAVY_HEAD), (NARROW, None)):
        table = Table(title=f"msglab compare ({summary['seconds']} s)", box=box, pad_edge=False)
        for key, header in (("#", "#"), *columns, ("verdict", "verdict"), ("claim", "claim")):
            text = key in ("run", "transport", "profile", "fault", "verdict", "claim")
            # a long setting (log.flush.interval.messages=1) folds, it is never cut; in the
            # wide table the fault (with its settings) folds at FAULT_WIDTH
            table.add_column(
                header,
                justify="left" if text else "right",
                overflow="fold",
                max_width=FAULT_WIDTH if key == "fault" else None,
            )
        for i, row in enumerate(runs(summary), 1):
            r = row["report"]
            cells = {
                **r,
                "transport": transport_label(r),
                "fault": fault_label(r),
                "p99": f"{r['latency_ms']['p99']:.0f}",
                "lost_from_storage": _dash(r.get("lost_from_storage")),
                "publish_per_s": f"{r['publish_per_s']:.0f}",
                "run": f"{transport_label(r)} {r['profile']} {fault_label(r)}",
            }
            verdict = "[green]kept[/]" if r["verdict"] == "kept" else "[bold red]broken[/]"
            observed = "[green]observed[/]" if row["observed"] else "[yellow]not obs.[/]"
            table.add_row(str(i), *(str(cells[key]) for key, _ in columns), verdict, observed)
        if Console(width=1000).measure(table).maximum <= width:
            break
    return table


def finished_line(i: int, n: int, result: dict[str, Any]) -> str:
    """One line for a finished row of the matrix: number, what ran, what it measured, whether
    the claim was observed."""
    r = result["report"]
    observed = "observed" if result["observed"] else "NOT observed"
    if result["kind"] == "probe":
        what = f"probe {r['probe']} {r['variant']}: {r['measured']}"
    else:
        what = (
            f"{transport_label(r)} {r['profile']} {fault_label(r)}: lost {r['lost']}, "
            f"{_stored(r)}duplicate effects {r['duplicate_effects']}{_other(r)}, {r['verdict']}"
            f"{_price(result)}{_repeated(r)}"
        )
    return f"[{i + 1:>{len(str(n))}}/{n}] {what}; claim {observed}"


def _dash(value: Any) -> Any:
    return "-" if value is None else value


def _stored(report: dict[str, Any]) -> str:
    stored = report.get("lost_from_storage")
    return "" if stored is None else f"lost from storage {stored}, "


def _other(report: dict[str, Any]) -> str:
    """The figures a row may be about beside loss and duplicates, when not 0: reordered,
    phantom, quarantined."""
    shown = [(k, report.get(k)) for k in ("reordered", "phantom", "quarantined")]
    return "".join(f", {k} {v}" for k, v in shown if v)


def _repeated(report: dict[str, Any]) -> str:
    """A repeated row's runs (its counts are their totals)."""
    rep = report.get("repeat")
    if not rep:
        return ""
    return f" (totals of {rep['runs']} runs; lost in {rep['runs_that_lost']})"


def _price(result: dict[str, Any]) -> str:
    """What the row's settings cost, when the row measured it."""
    price = result.get("price")
    if not price:
        return ""
    return f", {price['publish_per_s']:,.0f} msgs/s without the fault"


def _print_finished(i: int, n: int, row: Row | Probe, result: dict[str, Any] | None) -> None:
    if result is not None:
        print(finished_line(i, n, result), flush=True)


def _show_probes(rows: list[dict[str, Any]], first: int) -> None:
    if not rows:
        return
    table = Table(title="claims measured by probes", box=None, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("probe", no_wrap=True)
    table.add_column("measured")  # the one column that wraps
    table.add_column("claim", no_wrap=True)
    for i, row in enumerate(rows, first):
        r = row["report"]
        observed = "[green]observed[/]" if row["observed"] else "[yellow]not obs.[/]"
        table.add_row(str(i), f"{r['probe']} {r['variant']}", r["measured"], observed)
    console.print(table)
    for i, row in enumerate(rows, first):
        console.print(f"[dim]{i:>2}. {row['claim']} (expect {row['expect']})[/]")


def probe(
    name: Annotated[str, typer.Argument(help=f"The probe: {', '.join(PROBES)}.")],
    variant: Annotated[
        str | None, typer.Argument(help="One of its variants; all of them when omitted.")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick/--full", help="Quick: shorter runs.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
) -> None:
    """Run one probe (or each of its variants) on the real servers: what it measured, beside
    the claim of the matrix it tests and whether the figures bear it out."""
    if name not in PROBES:
        raise UsageError(f"unknown probe {name!r}; valid: {', '.join(PROBES)}")
    settings = Settings.from_env()
    claims = {(row.probe, row.variant): row for row in FULL if isinstance(row, Probe)}
    rows: list[dict[str, Any]] = []
    for v in [variant] if variant else PROBES[name]:
        report = run_probe(name, v, settings, quick)
        row = claims[(name, v)]  # every variant is a row of the full matrix (tested)
        observed = bool(row.check(report))
        rows.append(
            {"claim": row.claim, "expect": row.expect, "observed": observed, "report": report}
        )
    if as_json:
        print(json.dumps(rows))
        return
    _show_probes(rows, first=1)
