"""What the CLI prints fits an 80-column terminal and reads well in a log or a pipe."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from msglab.cli import app
from msglab.cli import lab as lab_cli
from msglab.cli.infra import status_table
from msglab.infra import Status
from msglab.lab import compare as lab_compare
from msglab.lab.matrix import CLUSTERS, FULL, QUICK, Probe, Row

LONG = "broker-1.kafka.production.example.com:9092"


def status(service: str, address: str, pid: int | None, version: str) -> Status:
    return Status(service, "msglab", pid, address, "", True, None, version)


ROWS = [
    status("kafka", LONG, None, "4.1.1"),
    status("connect", "127.0.0.1:28083", 23456, "4.1.1 (Debezium 3.4.1.Final)"),
    status("toxiproxy", "127.0.0.1:28474", 12345, "2.12.0"),
]


def render(rows: list[Status], width: int) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None)
    console.print(status_table(rows, console.width))
    return out.getvalue().splitlines()


def test_status_keeps_every_address_and_pid_whole_at_80_columns() -> None:
    lines = render(ROWS, 80)
    assert all(len(line) <= 80 for line in lines), lines
    for row in ROWS:
        (line,) = [line for line in lines if line.startswith(row.service)]
        assert row.address in line and str(row.pid or "-") in line, line


def test_status_shows_the_version_when_there_is_room() -> None:
    assert any("4.1.1 (Debezium 3.4.1.Final)" in line for line in render(ROWS[1:], 80))


def test_status_marks_a_server_on_the_lazy_filesystem_within_80_columns() -> None:
    rows = [
        Status("postgres", "msglab", 1234567, "127.0.0.1:25742", "", True, None, "15.14", True),
        *ROWS[1:],
    ]
    lines = render(rows, 80)
    assert all(len(line) <= 80 for line in lines), lines
    (line,) = [line for line in lines if line.startswith("postgres")]
    assert "msglab+lazyfs" in line and "15.14" in line


def test_status_shows_a_cluster_node_per_line_with_its_role_within_80_columns() -> None:
    roles = ("controller-leader", "controller-follower", None)
    rows = [
        Status(
            "kafka-cluster",
            "msglab",
            1234567 if role else None,
            f"127.0.1.{i}:29092",
            "",
            role is not None,
            None,
            "4.1.1",
            lazyfs=True,
            node=f"n{i}",
            role=role,
        )
        for i, role in enumerate(roles, start=1)
    ]
    lines = render([*rows, *ROWS[1:]], 80)
    assert all(len(line) <= 80 for line in lines), lines
    for row in rows:
        (line,) = [line for line in lines if line.startswith(f"kafka-cluster/{row.node}")]
        assert row.address in line and "msglab+lazyfs" in line, line
    assert "leader" in lines[2] and "follower" in lines[3] and "-" in lines[4].split()[-1]


def test_status_in_a_pipe_keeps_addresses_whole(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "msglab", "infra", "status"],
        capture_output=True,
        text=True,
        env={**os.environ, "MSGLAB_HOME": str(tmp_path), "MSGLAB_REDIS_URL": f"redis://{LONG}"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert LONG in result.stdout
    assert "…" not in result.stdout
    assert max(map(len, result.stdout.splitlines())) <= 80


def fake_compare(out: Path, quick: bool, progress: Any = None, **_: Any) -> dict[str, Any]:
    """Two rows of the quick matrix, 'run' at once: what the CLI shows of each as it ends."""
    row = next(r for r in QUICK if isinstance(r, Row))
    probe = next(r for r in QUICK if isinstance(r, Probe))
    report = {
        "transport": row.transport,
        "pattern": "direct",
        "profile": row.profile,
        "fault": row.fault,
        "lost": 7,
        "lost_from_storage": 9,
        "duplicate_effects": 3,
        "verdict": "broken",
    }
    price = {"publish_per_s": 24154.3, "batch": 100}
    results = [
        {
            "kind": "run",
            "observed": True,
            "report": report,
            "claim": "c",
            "expect": "e",
            "price": price,
        },
        {
            "kind": "probe",
            "observed": False,
            "report": {"probe": probe.probe, "variant": probe.variant, "measured": "1 of 2"},
            "claim": "c",
            "expect": "e",
        },
    ]
    for i, (r, result) in enumerate(zip((row, probe), results, strict=True)):
        progress(i, 2, r, None)
        progress(i, 2, r, result)
    return {"quick": True, "seconds": 1.0, "rows": [], "skipped": []}


def test_compare_in_a_pipe_prints_a_line_per_finished_row(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(lab_compare, "compare", fake_compare)
    result = CliRunner().invoke(app, ["compare", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    (first,) = [line for line in lines if line.startswith("[1/2]")]
    assert "lost 7" in first and "duplicate effects 3" in first and "broken" in first
    assert "lost from storage 9" in first and "24,154 msgs/s without the fault" in first
    (second,) = [line for line in lines if line.startswith("[2/2]")]
    assert "probe" in second and "1 of 2" in second and "NOT observed" in second


def summary_of_every_full_run() -> dict[str, Any]:
    report = {
        "sent": 6000,
        "confirmed": 6000,
        "delivered": 5990,
        "lost": 10,
        "duplicate_effects": 345,
        "reordered": 0,
        "latency_ms": {"p99": 1514.0},
        "publish_per_s": 1506.0,
        "verdict": "broken",
    }
    rows = [
        {
            "kind": "run",
            "observed": True,
            "report": {
                **report,
                "transport": r.transport,
                "pattern": r.pattern,
                "profile": r.profile,
                "fault": r.fault,
                "sets": r.sets,
                "cluster": r.cluster,
                "partition": r.partition,
                "lost_from_storage": 10_020 if "power-cut" in r.fault else None,
            },
            "price": {"publish_per_s": 123_456.7, "batch": 100} if r.price_batch else None,
        }
        for r in (*FULL, *CLUSTERS)
        if isinstance(r, Row)
    ]
    return {"seconds": 1.0, "rows": rows}


@pytest.mark.parametrize(("width", "shows"), [(80, "run"), (200, "p99 ms")])
def test_the_compare_table_fits_the_terminal(width: int, shows: str) -> None:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None)
    summary = summary_of_every_full_run()
    console.print(lab_cli.runs_table(summary, width))
    lines = out.getvalue().splitlines()
    assert max(map(len, lines)) <= width
    assert shows in lines[1] + lines[2]  # the header (the wide table's is under its border)
    assert "…" not in out.getvalue()
    last = len(summary["rows"])
    numbered = [line for line in lines if re.match(rf"^\W*{last}\b", line)]
    assert len(numbered) == 1, "the last run has no line of its own"
    assert "10020" in out.getvalue()  # lost from storage, in either table


def test_profiles_fit_80_columns_and_show_every_failover_setting_whole(tmp_path: Path) -> None:
    """`msglab profiles` in an 80-column terminal: no line wider, no value cut short, and
    librdkafka's long failover names each on one line."""
    from msglab.brokers.kafka import failover_settings
    from msglab.config import ClientConfig

    result = subprocess.run(
        [sys.executable, "-m", "msglab", "profiles"],
        capture_output=True,
        text=True,
        env={**os.environ, "MSGLAB_HOME": str(tmp_path), "COLUMNS": "80"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in result.stdout
    words = set(result.stdout.replace("│", " ").split())
    assert set(failover_settings(ClientConfig(url="x"))) <= words
    for row in ("failover publish", "failover consume", "failover sentinel", "failover silence"):
        assert row in result.stdout


def test_lag_table_keeps_the_figures_whole_and_folds_a_long_queue_at_80_columns() -> None:
    from msglab.cli.status import lag_table
    from msglab.lag import Lag

    queue = "orders.eu-west-1.production.payments-reconciliation.billing-team"
    lags = [
        Lag(queue, None, 1234567, None, {"consumers": 3}, "unacked unknown"),
        Lag("7", 12, details={"committed": 88, "log-start": 0, "end": 100}),
    ]
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    console.print(lag_table(lags, "g on rabbitmq:orders", console.width))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert queue in "".join(line.split()[0] for line in lines[2:] if line.split())
    (line,) = [line for line in lines if line.startswith(queue[:20])]
    assert "1234567" in line and "?" in line
    assert any(line.split()[:2] == ["7", "12"] for line in lines), lines
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(lag_table(lags[1:], "g on k:t", 80))
    assert "committed 88, log-start 0, end 100" in out.getvalue()  # room for the details
    (total_line,) = [line for line in lines if line.startswith("total")]
    assert "?" in total_line  # one part unknown: so is the sum
