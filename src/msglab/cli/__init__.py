"""The ``msglab`` command: the composition root. Nothing imports it.

Each area is a Typer sub-app in its own module; errors become exit codes in one place
(``main``): a MsglabError prints its message and exits with its ``exit_code``.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from msglab.cli import bench, infra, lab, messaging
from msglab.errors import MsglabError

app = typer.Typer(
    name="msglab",
    help="Compare asynchronous messaging patterns on real servers, including while they break.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(infra.app, name="infra")
app.add_typer(bench.app, name="bench")
for command in messaging.COMMANDS:
    app.command()(command)
app.command()(lab.run)
app.command()(lab.compare)
app.command()(lab.probe)

err_console = Console(stderr=True)


def main() -> None:
    """Entry point: run the app; a MsglabError becomes its message and exit code."""
    try:
        code = app(standalone_mode=False)  # Ctrl-C inside a command comes back as 130
    except MsglabError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click's usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and code:
        err_console.print("aborted")
        sys.exit(code)
