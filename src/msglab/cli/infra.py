"""``msglab infra``: install, start, stop, kill and inspect the real servers."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from msglab.errors import UsageError
from msglab.infra import backend_for
from msglab.settings import BACKENDS, SERVICES, Settings, check_services

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
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _backend(backend: str | None):  # type: ignore[no-untyped-def]
    settings = Settings.from_env()
    if backend is not None:
        if backend not in BACKENDS[:2]:
            raise UsageError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS[:2])}")
        settings = settings.with_backend(backend)
    return backend_for(settings)


def _one(services: list[str] | None, verb: str) -> list[str]:
    names = list(check_services(services or []))
    if not services:
        raise UsageError(f"name the service(s) to {verb}: {', '.join(SERVICES)}")
    return names


@app.command()
def install(services: Services = None, backend: Backend = None) -> None:
    """Install the servers' software where missing (Debian packages, Kafka jars, Toxiproxy)."""
    done = _backend(backend).install(services or [])
    console.print(f"installed: {', '.join(done)}" if done else "everything already installed")


@app.command()
def up(services: Services = None, backend: Backend = None, as_json: AsJson = False) -> None:
    """Start the servers (installing what is missing) and wait until each answers."""
    reports = _backend(backend).up(services or [])
    if as_json:
        print(json.dumps([r.__dict__ for r in reports]))
        return
    for r in reports:
        what = ("cold start" if r.cold else "warm start") if r.started else "already running"
        console.print(
            f"[green]✔[/] {r.service:<9} {what}" + (f" in {r.seconds:.2f}s" if r.started else "")
        )


@app.command()
def status(services: Services = None, backend: Backend = None, as_json: AsJson = False) -> None:
    """Show each server: PID, address, URL, health, data folder, version."""
    rows = _backend(backend).status(services or [])
    if as_json:
        print(json.dumps([s.to_json() for s in rows], indent=2))
        return
    table = Table(title="msglab servers (URLs and data folders: --json)")
    for col in ("service", "owner", "pid", "address", "healthy", "version"):
        table.add_column(col, no_wrap=True)
    for s in rows:
        health = "[green]yes[/]" if s.healthy else "[red]no[/]"
        table.add_row(s.service, s.owner, str(s.pid or "-"), s.address, health, s.version or "-")
    console.print(table)


@app.command()
def down(services: Services = None, backend: Backend = None) -> None:
    """Stop the servers gracefully; their data stays."""
    stopped = _backend(backend).down(services or [])
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def kill(services: Services = None, backend: Backend = None) -> None:
    """SIGKILL the real server process (JVM, beam.smp, redis-server, postmaster,
    toxiproxy-server); data stays."""
    b = _backend(backend)
    for name in _one(services, "kill"):
        pid = b.kill(name)
        console.print(f"[red]✘[/] {name}: killed pid {pid} with SIGKILL")


@app.command()
def restart(services: Services = None, backend: Backend = None) -> None:
    """Bring servers back with their data (after a kill, or stop-and-start when running)."""
    b = _backend(backend)
    for name in _one(services, "restart"):
        r = b.restart(name)
        console.print(f"[green]✔[/] {name}: back in {r.seconds:.2f}s")


@app.command()
def logs(
    services: Services = None,
    backend: Backend = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines per service.")] = 40,
) -> None:
    """Print the last lines of each server's log."""
    b = _backend(backend)
    for name in check_services(services or []):
        console.rule(name)
        print(b.logs(name, lines))
