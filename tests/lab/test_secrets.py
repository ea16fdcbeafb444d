"""No password of the servers a run uses reaches a file under the run folder, the command's
output, or a command line that every user of the machine can read (``ps``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from msglab.db import engine
from msglab.infra import Status
from msglab.infra.rabbitmq import RabbitMQ
from msglab.lab.compare import compare, refusal
from msglab.lab.matrix import QUICK, Row
from msglab.settings import Settings

PG_PASSWORD = "pg-Secr3t-7c1e9a"
MQ_PASSWORD = "mq-Secr3t-5b2f4d"
SECRETS = (PG_PASSWORD.encode(), MQ_PASSWORD.encode())
USER = "msglab_secret_probe"


def _rabbitmqctl(*args: str) -> None:
    node = RabbitMQ(Settings.from_env())
    subprocess.run(
        ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", node.node, "-q", *args],
        env=node.env(),
        capture_output=True,
        check=False,
        timeout=60,
    )


@pytest.fixture
def external_urls(postgres_server: Status, rabbitmq_server: Status) -> dict[str, str]:
    """msglab's own servers, reached as a user's would be: a user of each with a password
    nothing else uses, given as MSGLAB_<SERVICE>_URL."""
    pg = engine(postgres_server.url)
    with pg.begin() as conn:
        conn.execute(text(f"DROP ROLE IF EXISTS {USER}"))
        conn.execute(text(f"CREATE ROLE {USER} LOGIN SUPERUSER PASSWORD '{PG_PASSWORD}'"))
    pg.dispose()
    _rabbitmqctl("delete_user", USER)
    _rabbitmqctl("add_user", USER, MQ_PASSWORD)
    _rabbitmqctl("set_permissions", "-p", "/", USER, ".*", ".*", ".*")
    pg_address = postgres_server.address
    return {
        "MSGLAB_POSTGRES_URL": f"postgresql://{USER}:{PG_PASSWORD}@{pg_address}/msglab",
        "MSGLAB_RABBITMQ_URL": f"amqp://{USER}:{MQ_PASSWORD}@{rabbitmq_server.address}/%2F",
    }


@pytest.fixture
def argv_watch() -> Iterator[list[str]]:
    """Every command line on the machine that shows a secret while the test runs."""
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    argv = cmdline.read_bytes()
                except OSError:
                    continue
                if any(secret in argv for secret in SECRETS):
                    seen.append(argv.replace(b"\0", b" ").decode(errors="replace"))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield seen
    stop.set()
    watcher.join()


def files_with_secrets(folder: Path) -> list[str]:
    return [
        str(path)
        for path in folder.rglob("*")
        if path.is_file() and any(secret in path.read_bytes() for secret in SECRETS)
    ]


def msglab(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "msglab", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_no_password_in_run_files_output_status_or_argv(
    tmp_path: Path, external_urls: dict[str, str], argv_watch: list[str]
) -> None:
    output = msglab(external_urls, "infra", "status")
    output += msglab(external_urls, "infra", "status", "--json")
    output += msglab(
        external_urls,
        *("run", "-t", "rabbitmq", "-n", "300", "--fault", "consumer-kill"),
        *("--kill-after", "100", "--runs-dir", str(tmp_path / "runs")),
    )
    assert "promise kept" in output, output
    settings = Settings.from_env({**os.environ, **external_urls})
    row = next(  # a row that can run on servers msglab does not own: no server kill
        r
        for r in QUICK
        if isinstance(r, Row) and r.transport == "rabbitmq" and not refusal(r, True, settings)
    )
    summary = compare(tmp_path / "compare", settings=settings, rows=[row])
    assert [r["report"]["transport"] for r in summary["rows"]] == ["rabbitmq"]
    assert summary["skipped"] == []

    assert not any(secret.decode() in output for secret in SECRETS), output
    assert files_with_secrets(tmp_path) == []
    assert argv_watch == []
    assert "***" in (next((tmp_path / "runs").glob("*/run.json"))).read_text()
