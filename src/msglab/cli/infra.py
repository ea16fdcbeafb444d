"""``msglab infra``: install, start, stop, kill and inspect the real servers."""

from __future__ import annotations

import io
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from msglab.errors import UsageError
from msglab.infra import Status, backend_for, service_url
from msglab.settings import BACKENDS, CLUSTER_NODES, SERVICES, Settings, check_services

app = typer.Typer(help="Run the real servers: " + ", ".join(SERVICES) + ".", no_args_is_help=True)
console = Console()

Services = Annotated[
    list[str] | None,
    typer.Argument(
        help=f"Services ({', '.join(SERVICES)}); all when none is given.", show_default=False
    ),
]
Backend = Annotated[
    str | None,
    typer.Option("--backend", help=f"One of {', '.join(BACKENDS[:2])} (env MSGLAB_BACKEND)."),
]
Targets = Annotated[
    list[str] | None,
    typer.Argument(
        help=f"Services ({', '.join(SERVICES)}), or one node of a cluster "
        f"({', '.join(f'{c}/{nodes[0]}' for c, nodes in CLUSTER_NODES.items())} ...).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _backend(backend: str | None):  # type: ignore[no-untyped-def]
    settings = Settings.from_env()
    if backend is not None:
        if backend not in BACKENDS[:2]:
            raise UsageError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS[:2])}")
        settings = settings.with_backend(backend)
    return backend_for(settings)


def _one(services: list[str] | None, verb: str) -> list[str]:
    names = list(check_services(services or [], nodes=True))
    if not services:
        raise UsageError(f"name the service(s) to {verb}: {', '.join(SERVICES)}")
    return names


@app.command()
def install(services: Services = None, backend: Backend = None) -> None:
    """Install the servers' software where missing (Debian packages, Kafka jars, Toxiproxy)."""
    done = _backend(backend).install(services or [])
    console.print(f"installed: {', '.join(done)}" if done else "everything already installed")


LazyFS = Annotated[
    bool,
    typer.Option(
        "--lazyfs",
        help="Data on msglab's lazy filesystem, for `power-cut` (servers that keep data).",
    ),
]


@app.command()
def up(
    services: Services = None,
    backend: Backend = None,
    lazyfs: LazyFS = False,
    as_json: AsJson = False,
) -> None:
    """Start the servers (installing what is missing) and wait until each answers.

    With `--lazyfs` each server's data folder is on msglab's lazy filesystem, which writes
    data to disk only when the server fsyncs it: `power-cut` then drops the rest. The servers
    stay there through kill, power-cut and restart, until `down`."""
    reports = _backend(backend).up(services or [], lazyfs=lazyfs)
    if as_json:
        print(json.dumps([r.__dict__ for r in reports]))
        return
    for r in reports:
        what = ("cold start" if r.cold else "warm start") if r.started else "already running"
        console.print(
            f"[green]✔[/] {r.service:<9} {what}" + (f" in {r.seconds:.2f}s" if r.started else "")
        )


@app.command()
def status(services: Targets = None, backend: Backend = None, as_json: AsJson = False) -> None:
    """Show each server: PID, address, URL, health, data folder, version; a cluster's nodes
    one per line, with each node's role read from the cluster now (a node: `kafka-cluster/n2`)."""
    rows = _backend(backend).status(services or [])
    if as_json:
        print(json.dumps([s.to_json() for s in rows], indent=2))
        return
    table = status_table(rows, console.width)
    if table.min_width and table.min_width > console.width:
        # as kubectl does: the terminal wraps a line that is too long, nothing is cut
        wide = Console(width=table.min_width, file=io.StringIO(), color_system=None)
        wide.print(table)
        print(wide.file.getvalue(), end="")  # type: ignore[attr-defined]
        return
    console.print(table)


def status_table(rows: list[Status], width: int) -> Table:
    """One line per server, as ``kubectl get`` draws it: no borders, and the columns a person
    looks up (service, pid, address) never cut. They keep their full width (the table's
    ``min_width``, which can exceed ``width`` for a long external address); the version is cut
    to what is left of ``width`` columns, and left out when fewer than 8 are (80 columns fit
    every server msglab runs). A cluster's node is a line ``kafka-cluster/n2`` with its role in
    the cluster, shortened (``leader`` for ``controller-leader``: the full role is in --json)."""
    table = Table(title="msglab servers (URLs, data folders: --json)", box=None, pad_edge=False)
    whole = {
        "service": [s.service + (f"/{s.node}" if s.node else "") for s in rows],
        "pid": [str(s.pid or "-") for s in rows],
        "address": [s.address for s in rows],
        "healthy": [("yes" if s.healthy else "no") for s in rows],
        "owner": [s.owner + ("+lazyfs" if s.lazyfs else "") for s in rows],
    }
    if any(s.node for s in rows):
        whole["role"] = [_short_role(s.role) if s.node else "" for s in rows]
    used = 0
    for col, cells in whole.items():
        widest = max(map(len, [col, *cells]))
        table.add_column(col, no_wrap=True, min_width=widest, header_style="bold")
        used += widest + 2
    table.min_width = used - 2
    with_version = width - used >= 8
    if with_version:
        table.add_column("version", no_wrap=True, overflow="ellipsis", header_style="bold")
    for i, s in enumerate(rows):
        cells = [whole[col][i] for col in whole]
        cells[3] = "[green]yes[/]" if s.healthy else "[red]no[/]"
        table.add_row(*cells, *([s.version or "-"] if with_version else []))
    return table


def _short_role(role: str | None) -> str:
    """A node's role in the status table: ``controller-leader`` -> ``leader``."""
    return "-" if role is None else role.removeprefix("controller-")


@app.command()
def url(
    service: Annotated[str, typer.Argument(help=f"One of {', '.join(SERVICES)}.")],
) -> None:
    """Print the URL a plain client connects with, password included (``status`` hides it),
    for scripts: ``psql "$(msglab infra url postgres)"``."""
    (name,) = check_services([service])
    print(service_url(Settings.from_env(), name))


@app.command()
def down(services: Services = None, backend: Backend = None) -> None:
    """Stop the servers gracefully; their data stays."""
    stopped = _backend(backend).down(services or [])
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def kill(services: Targets = None, backend: Backend = None) -> None:
    """SIGKILL the real server process (JVM, beam.smp, redis-server, postmaster,
    toxiproxy-server); data stays. A cluster's node: `kafka-cluster/n2`; a bare cluster name
    kills every node at once."""
    b = _backend(backend)
    for name in _one(services, "kill"):
        for server, pid in b.kill_all(name):
            console.print(f"[red]✘[/] {server}: killed pid {pid} with SIGKILL")


SHOWN_FILES = 10


@app.command("power-cut")
def power_cut(services: Targets = None, backend: Backend = None, as_json: AsJson = False) -> None:
    """Cut the power of servers started with `up --lazyfs`: SIGKILL every process of the
    server, drop every byte it wrote and did not fsync, unmount. The server stays down
    (`restart` brings it back); each cut is a line of `<home>/<server>/power-cuts.jsonl`.
    A cluster's node: `kafka-cluster/n2`; a bare cluster name cuts every node at once."""
    b = _backend(backend)
    reports = [r for name in _one(services, "power-cut") for r in b.power_cut_all(name)]
    if as_json:
        print(json.dumps([r.to_json() for r in reports], indent=2))
        return
    for r in reports:
        console.print(
            f"[red]✘[/] {r.service}: power cut ({len(r.killed)} killed), "
            f"{r.dropped_bytes:,} unsynced bytes dropped"
        )
        lossy = sorted((f for f in r.files if f.dropped_bytes), key=lambda f: -f.dropped_bytes)
        for f in lossy[:SHOWN_FILES]:
            console.print(
                f"    {f.path}: {f.dropped_bytes:,} B dropped ({f.size:,} -> {f.synced_size:,} B)",
                highlight=False,
                soft_wrap=True,
            )
        if len(lossy) > SHOWN_FILES:
            console.print(f"    ... {len(lossy) - SHOWN_FILES} more files (--json)")


@app.command()
def restart(services: Targets = None, backend: Backend = None) -> None:
    """Bring servers back with their data (after a kill, or stop-and-start when running). A
    cluster's node (`kafka-cluster/n2`) is back once it has joined the cluster again."""
    b = _backend(backend)
    for name in _one(services, "restart"):
        r = b.restart(name)
        console.print(f"[green]✔[/] {name}: back in {r.seconds:.2f}s")


@app.command()
def logs(
    services: Targets = None,
    backend: Backend = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines per server.")] = 40,
) -> None:
    """Print the last lines of each server's log (a cluster: each node's)."""
    b = _backend(backend)
    for name in check_services(services or [], nodes=True):
        console.rule(name)
        print(b.logs(name, lines))
