"""``msglab.cli.main``: every bad command line is one line on stderr and exit 2, with click
absent (Typer >= 0.29 carries its own copy); a command whose driver is missing names the extra.
Drivers are made missing by a ``None`` in ``sys.modules`` (an import then fails as it does when
the package is not installed), in a fresh interpreter so that nothing is imported already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from msglab.cli import main

DRIVERS = ("confluent_kafka", "pika", "redis", "sqlalchemy", "psycopg", "httpx")

USAGE_ERRORS = {
    ("run", "--bogus"): "No such option: --bogus (see '",
    ("run", "-t", "kafka", "-n", "-5"): "Invalid value for '--messages' / '-n'",
    ("no-such-command",): "No such command 'no-such-command'. (see '",
    ("run",): "Missing option '--transport'",
    ("infra", "status", "--backend"): "Option '--backend' requires an argument",
    ("probe", "concurrency", "a", "b"): "Got unexpected extra argument",
}


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["msglab", *args])
    monkeypatch.setitem(sys.modules, "click", None)  # as in msglab[all]: no click at all
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=" ".join)
def test_a_usage_error_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    code = _main(monkeypatch, *args)
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert USAGE_ERRORS[args] in err
    assert out == ""


def test_a_usage_error_names_its_command_s_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _main(monkeypatch, "infra", "status", "--bogus")
    assert capsys.readouterr().err.endswith("msglab infra status --help')\n")


def test_no_command_prints_the_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _main(monkeypatch, "infra")
    out, err = capsys.readouterr()
    assert code == 2  # Typer's exit code for a group called without a command
    assert "status" in out and "Usage" in out and err == ""


def test_help_exits_0(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(monkeypatch, "run", "--help") == 0
    assert "--transport" in capsys.readouterr().out


def test_a_msglab_error_keeps_brackets_as_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _main(monkeypatch, "publish", "-t", "zeromq") == 2
    assert "valid: memory, kafka" in capsys.readouterr().err


def _without_drivers(
    code: str, blocked: tuple[str, ...] = DRIVERS
) -> subprocess.CompletedProcess[str]:
    prelude = f"import sys\nfor m in {blocked!r} + ('click',):\n    sys.modules[m] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=60
    )


def _cli_without_drivers(
    tmp_path: Path, *args: str, blocked: tuple[str, ...] = DRIVERS
) -> subprocess.CompletedProcess[str]:
    code = (
        f"import os; os.environ['MSGLAB_HOME'] = {str(tmp_path)!r}\n"
        f"sys.argv = ['msglab', *{args!r}]\nfrom msglab.cli import main\nmain()\n"
    )
    return _without_drivers(code, blocked)


def test_the_cli_starts_without_importing_a_driver() -> None:
    code = (
        "import msglab.cli\n"
        f"loaded = [m for m in sys.modules if m.split('.')[0] in {DRIVERS!r} and sys.modules[m]]\n"
        "print(loaded)\n"
    )
    result = _without_drivers(code, blocked=())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "blocked", "hint"),
    [
        (("publish", "-t", "kafka"), DRIVERS, "pip install 'msglab[kafka]'"),
        (("consume", "-t", "redis-streams"), DRIVERS, "pip install 'msglab[redis]'"),
        (("bench", "publish", "-t", "rabbitmq"), DRIVERS, "pip install 'msglab[rabbitmq]'"),
        (("run", "-t", "kafka"), DRIVERS, "pip install 'msglab[kafka,postgres]'"),
        (("run", "-t", "kafka", "--pattern", "cdc"), ("httpx",), "pip install 'msglab[cdc]'"),
        (("probe", "scaling"), DRIVERS, "pip install 'msglab[kafka]'"),
        (("compare",), ("pika", "httpx"), "pip install 'msglab[rabbitmq,cdc]'"),
        (("profiles", "-t", "kafka"), DRIVERS, "pip install 'msglab[kafka]'"),
    ],
)
def test_a_command_without_its_driver_names_the_extra(
    tmp_path: Path, args: tuple[str, ...], blocked: tuple[str, ...], hint: str
) -> None:
    result = _cli_without_drivers(tmp_path, *args, blocked=blocked)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and hint in result.stderr, result.stderr


def test_commands_that_need_no_driver_work_without_any(tmp_path: Path) -> None:
    for args in (("--help",), ("infra", "status", "--json"), ("roundtrip", "memory", "files")):
        result = _cli_without_drivers(tmp_path, *args)
        assert result.returncode == 0, (args, result.stderr)


def test_profiles_shows_the_transports_it_can_and_names_the_rest(tmp_path: Path) -> None:
    result = _cli_without_drivers(tmp_path, "profiles", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert sorted(shown) == ["files", "memory", "servers"]
    # the servers' settings are read without any driver; none of this home's runs
    assert shown["servers"]["redis"] == {"appendfsync": "not running"}
    assert "pip install 'msglab[kafka,rabbitmq,redis]'" in result.stderr


def test_importing_a_module_without_its_driver_names_the_extra() -> None:
    code = (
        "from msglab.errors import MissingExtraError\n"
        "try:\n    import msglab.outbox\nexcept ImportError as exc:\n"
        "    assert isinstance(exc, MissingExtraError) and exc.name == 'sqlalchemy'\n"
        "    print(exc)\n"
    )
    result = _without_drivers(code)
    assert result.returncode == 0, result.stderr
    assert "msglab.outbox" in result.stdout
    assert "pip install 'msglab[sqlite]'" in result.stdout
