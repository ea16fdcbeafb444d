"""msglab as a user installs it: one wheel in a fresh venv with no extras, and in another with
``[all]`` only (no dev tools, so no click). The CLI must start, answer ``--help`` and ``infra
status``, turn usage errors into one line with exit 2, and name the extra a command needs.

The wheel is built once and installed into both venvs with the test run's own pip (pip's cache
makes the second run fast); these tests need the package index or that cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.packaging

USAGE_ERRORS = [
    ("run", "--bogus"),
    ("run", "-t", "kafka", "-n", "-5"),
    ("no-such-command",),
    ("run",),  # a missing required option
]


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        timeout=900,
        env=_clean_env(),
    )


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing of the dev venv leaks in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _pip("wheel", "--no-deps", "--wheel-dir", str(out), str(REPO))
    (built,) = out.glob("msglab-*.whl")
    return built


@pytest.fixture(scope="module", params=["bare", "all"])
def venv(request: pytest.FixtureRequest, wheel: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A venv holding msglab from the wheel: with no extras (``bare``) or with ``[all]``."""
    kind: str = request.param
    path = tmp_path_factory.mktemp(f"venv-{kind}")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    target = str(wheel) if kind == "bare" else f"{wheel}[all]"
    _pip("--python", str(path / "bin" / "python"), "install", target)
    return kind, path


def _msglab(venv_dir: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv_dir / "bin" / "msglab"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(MSGLAB_HOME=str(home), COLUMNS="200"),
        cwd=home,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_help_works(venv: tuple[str, Path], tmp_path: Path) -> None:
    _, path = venv
    result = _msglab(path, tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    assert "infra" in result.stdout and "run" in result.stdout


def test_infra_status_works(venv: tuple[str, Path], tmp_path: Path) -> None:
    _, path = venv
    result = _msglab(path, tmp_path, "infra", "status", "--json")
    assert result.returncode == 0, result.stderr
    assert '"service": "kafka"' in result.stdout


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=" ".join)
def test_usage_error_is_one_line_and_exit_2(
    venv: tuple[str, Path], tmp_path: Path, args: tuple[str, ...]
) -> None:
    _, path = venv
    result = _msglab(path, tmp_path, *args)
    line = _one_line(result)
    assert result.returncode == 2, result.stderr
    assert line.startswith("error: "), line


def test_a_command_without_its_driver_names_the_extra(
    venv: tuple[str, Path], tmp_path: Path
) -> None:
    kind, path = venv
    if kind != "bare":
        pytest.skip("[all] has every driver")
    result = _msglab(path, tmp_path, "publish", "-t", "kafka")
    line = _one_line(result)
    assert result.returncode == 2, result.stderr
    assert "pip install 'msglab[kafka]'" in line


def test_the_memory_transport_needs_no_extra(venv: tuple[str, Path], tmp_path: Path) -> None:
    _, path = venv
    result = _msglab(path, tmp_path, "roundtrip", "memory", "-n", "20", "--json")
    assert result.returncode == 0, result.stderr
    assert '"transport": "memory"' in result.stdout


def test_importing_the_outbox_without_sqlalchemy_names_the_extra(venv: tuple[str, Path]) -> None:
    kind, path = venv
    code = "import msglab.outbox"
    result = subprocess.run(
        [str(path / "bin" / "python"), "-c", code], capture_output=True, text=True, env=_clean_env()
    )
    if kind == "all":
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        # sqlalchemy alone runs the outbox on SQLite; PostgreSQL adds psycopg (msglab[postgres])
        assert "pip install 'msglab[sqlite]'" in result.stderr.splitlines()[-1]
