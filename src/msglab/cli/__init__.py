"""The ``msglab`` command: the composition root. Nothing imports it.

Each area is a Typer sub-app in its own module; errors become exit codes in one place
(``main``): a MsglabError prints its message and exits with its ``exit_code``, a usage error of
the command line prints one line and exits 2. The sub-apps import the modules that need a
driver inside their commands, so ``msglab --help`` works without any extra installed.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from msglab.cli import batch, bench, cdc, dlq, infra, lab, messaging, relay, status, worker
from msglab.errors import MsglabError

app = typer.Typer(
    name="msglab",
    help="Compare asynchronous messaging patterns on real servers, including while they break.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # a docstring's single line breaks are not kept in --help
)
app.add_typer(infra.app, name="infra")
app.add_typer(bench.app, name="bench")
app.add_typer(dlq.app, name="dlq")
app.add_typer(relay.app, name="relay")
app.add_typer(batch.app, name="batch")
app.add_typer(cdc.app, name="cdc")
for command in messaging.COMMANDS:
    app.command()(command)
app.command()(status.status)
app.command()(lab.run)
app.command()(lab.compare)
app.command()(lab.probe)
app.command()(worker.worker)

err_console = Console(stderr=True)


def _error(message: str) -> None:
    """``error: message`` on stderr, brackets as written (``msglab[kafka]`` is no markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _usage_error(exc: typer.TyperException) -> int:
    """A bad command line (unknown option or command, bad or missing value): one line, and the
    command's ``--help``. Typer >= 0.29 raises these from its own copy of click, so they are
    ``typer.TyperException``s and never click's (which may not even be installed)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # Typer's own check (rich_utils), no import
        print(exc.format_message(), end="")  # the help; empty when Rich has printed it already
        return exc.exit_code
    message = " ".join(line.strip() for line in exc.format_message().splitlines())
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    _error(message.strip() + hint)
    return exc.exit_code


def main() -> None:
    """Entry point: run the app; a MsglabError or a usage error becomes one line and an exit
    code (2 for bad input)."""
    try:
        code = app(standalone_mode=False)  # Ctrl-C inside a command comes back as 130
    except MsglabError as exc:
        _error(str(exc))
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:
        sys.exit(_usage_error(exc))
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    if isinstance(code, int) and code:
        err_console.print("aborted")
        sys.exit(code)
