"""``msglab run --repeat``: what the runs add up to, recomputed from run folders written by hand,
the table and lines the CLI prints, and (marked tests) repetitions on the real servers."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from msglab.cli import app
from msglab.cli import lab as lab_cli
from msglab.errors import UsageError
from msglab.lab import repeat as lab_repeat
from msglab.lab.html import COLORS
from msglab.lab.repeat import COUNTS, REPEAT_JSON, aggregate, findings, write
from msglab.lab.scenario import Scenario
from msglab.lab.timeline_chart import LOST
from msglab.settings import Settings
from tests.lab.test_html import axis, chromium, number, rgb, screenshot
from tests.lab.test_runs import jsonl

SCENARIO = Scenario(transport="kafka", fault="broker-kill", messages=2000, run_id="first")


def fake_run(
    folder: Path,
    started: float,
    lost: int,
    *,
    confirmed: int = 2000,
    stored: int | None = None,
    dups: int = 0,
    interrupted: bool = False,
    scenario: Scenario = SCENARIO,
) -> dict[str, Any]:
    """A run folder as ``lab.run`` leaves it, as far as a repetition reads it: ``run.json``
    (its start) and ``report.json`` (its counts); its id looks like a real one, but random, so
    that the names do not give the order."""
    run_id = (
        f"{random.randrange(10**8):08d}-{random.randrange(10**6):06d}-{random.getrandbits(24):06x}"
    )
    sub = folder / run_id
    sub.mkdir(parents=True)
    cell = {**scenario.to_json(), "run_id": run_id}
    (sub / "run.json").write_text(json.dumps({"scenario": cell, "started": started}))
    counts = dict.fromkeys(COUNTS, 0) | {
        "sent": confirmed,
        "confirmed": confirmed,
        "delivered": confirmed - lost,
        "lost": lost,
        "lost_from_storage": stored,
        "duplicate_deliveries": dups,
        "duplicate_effects": dups,
    }
    report = {
        **counts,
        "run_id": run_id,
        "transport": scenario.transport,
        "profile": scenario.profile,
        "fault": scenario.fault,
        "verdict": "broken" if lost else "kept",
        "seconds": 10.0,
        "interrupted": interrupted,
        "scenario": cell,
    }
    (sub / "report.json").write_text(json.dumps(report))
    (sub / "report.html").write_text(f"<title>run {run_id}</title>")
    return report


def ten_runs(folder: Path, lost_in_run: dict[int, int], **fields: Any) -> list[dict[str, Any]]:
    """Ten runs of 2000 confirmed, started 1 s apart but written in a shuffled order; run i
    (from 1) lost ``lost_in_run.get(i, 0)``."""
    order = list(range(1, 11))
    random.shuffle(order)
    reports = {i: fake_run(folder, 100.0 + i, lost_in_run.get(i, 0), **fields) for i in order}
    return [reports[i] for i in range(1, 11)]


def test_one_loss_in_ten_runs_is_counted(tmp_path: Path) -> None:
    reports = ten_runs(tmp_path, {7: 41})
    doc = write(tmp_path, SCENARIO, 10, interrupted=False)
    assert [r["run_id"] for r in doc["runs"]] == [r["run_id"] for r in reports]  # as started
    assert [r["lost"] for r in doc["runs"]] == [0] * 6 + [41] + [0] * 3
    s = doc["summary"]
    assert (s["runs"], s["runs_that_lost"], s["runs_broken"]) == (10, 1, 1)
    assert s["counts"]["lost"] == {"total": 41, "in_runs": 1, "min": 0, "median": 0, "max": 41}
    assert s["counts"]["confirmed"]["total"] == 20_000
    assert s["counts"]["lost_from_storage"] is None  # not measured
    assert findings(doc)[0] == "lost in 1 of 10 runs; 41 of 20,000 confirmed lost"
    assert "promise (lost == 0) broken in 1 of 10 runs" in findings(doc)
    on_disk = json.loads((tmp_path / REPEAT_JSON).read_text())
    assert on_disk == doc
    assert {k: on_disk[k] for k in ("runs", "left_out", "summary")} == aggregate(tmp_path)


def test_a_loss_from_storage_is_a_loss_and_medians_are_of_the_runs(tmp_path: Path) -> None:
    for i, (lost, stored) in enumerate(((0, 5), (3, 0), (2, 9), (0, 0))):
        fake_run(tmp_path, float(i), lost, confirmed=1000, stored=stored, dups=i)
    doc = write(tmp_path, SCENARIO, 4, interrupted=False)
    s = doc["summary"]
    assert s["runs_that_lost"] == 3  # lost > 0 or lost_from_storage > 0
    assert s["counts"]["lost_from_storage"] == {
        "total": 14,
        "in_runs": 2,
        "min": 0,
        "median": 2.5,
        "max": 9,
    }
    assert s["counts"]["lost"]["median"] == 1  # of 0, 0, 2, 3: a whole number, an int
    assert s["counts"]["duplicate_effects"]["total"] == 0 + 1 + 2 + 3
    assert findings(doc)[:3] == [
        "lost in 3 of 4 runs; 5 of 4,000 confirmed lost (in 2 runs)",
        "lost from storage in 2 of 4 runs; 14 of 4,000 confirmed not kept",
        "duplicate effects in 3 of 4 runs; 6 in all",
    ]


def test_interrupted_and_failed_runs_are_left_out(tmp_path: Path) -> None:
    kept = fake_run(tmp_path, 1.0, 4)
    stopped = fake_run(tmp_path, 2.0, 900, interrupted=True)
    (tmp_path / "failed").mkdir()  # a run that failed before its report
    doc = write(tmp_path, SCENARIO, 5, interrupted=True)
    assert [r["run_id"] for r in doc["runs"]] == [kept["run_id"]]
    assert doc["left_out"] == [
        {"folder": stopped["run_id"], "reason": "interrupted"},
        {"folder": "failed", "reason": "no report.json: the run did not finish"},
    ]
    assert doc["summary"]["counts"]["lost"]["total"] == 4
    assert (doc["requested"], doc["interrupted"]) == (5, True)


def test_runs_of_another_scenario_are_refused(tmp_path: Path) -> None:
    fake_run(tmp_path, 1.0, 0)
    fake_run(tmp_path, 2.0, 0, scenario=Scenario(transport="kafka", messages=3000))
    with pytest.raises(UsageError, match="different scenarios"):
        aggregate(tmp_path)


@pytest.mark.parametrize("fields", [{"fault": "broker-kill"}, {"sets": ("appendfsync=no",)}])
def test_a_refused_scenario_leaves_no_folder(tmp_path: Path, fields: dict[str, Any]) -> None:
    """What a run refuses on a Redis msglab does not own (a kill, a setting), a repetition
    refuses before it makes its folder."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_URL")}
    settings = Settings.from_env({**env, "MSGLAB_REDIS_URL": "redis://h:1/0"})
    with pytest.raises(UsageError, match="MSGLAB_REDIS_URL"):
        lab_repeat.repeat(Scenario(transport="redis-streams", **fields), 3, settings, tmp_path)
    assert not list(tmp_path.iterdir())


def test_no_finished_run_is_summed_up_as_such(tmp_path: Path) -> None:
    doc = write(tmp_path, SCENARIO, 3, interrupted=True)
    assert doc["summary"]["runs"] == 0 and doc["runs"] == []
    assert findings(doc) == ["no run finished"]
    out = io.StringIO()
    Console(file=out, width=80).print(lab_cli.repeat_table(doc, 80))
    assert "0 of 3 runs" in out.getvalue() and "all" not in out.getvalue()


def fake_repeat(scenario: Scenario, times: int, runs_dir: Path, **callbacks: Any) -> dict[str, Any]:
    """A repetition of ``times`` runs, the third one losing 41 (and 7 not kept), written at
    once, with the callbacks called as ``lab.repeat.repeat`` calls them."""
    folder = runs_dir / f"{scenario.run_id}-x{times}"
    for i in range(times):
        report = fake_run(folder, float(i), 41 if i == 2 else 0, stored=7 if i == 2 else 0)
        if callbacks.get("finished"):
            callbacks["finished"](i, times, report)
    return write(folder, scenario, times, interrupted=False)


def cli_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> list[str]:
    monkeypatch.setattr(lab_repeat, "repeat", fake_repeat)
    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(
        app,
        ["run", "-t", "kafka", "--fault", "broker-kill", "--runs-dir", str(tmp_path), *args],
    )
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_the_cli_prints_a_line_per_run_then_the_table_and_the_findings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lines = cli_run(monkeypatch, tmp_path, "--repeat", "10")
    (folder,) = tmp_path.iterdir()
    assert lines[-2:] == [f"report: {folder / 'report.html'}", f"data: {folder / REPEAT_JSON}"]
    lines = lines[:-2]  # the paths are kept whole, however long
    assert max(map(len, lines)) <= 80, lines
    (third,) = [line for line in lines if line.startswith("[ 3/10] ")]
    assert "lost 41 of 2000, not kept 7, dups 0, broken" in third
    assert sum(line.startswith("[") for line in lines) == 10
    doc = json.loads((folder / REPEAT_JSON).read_text())
    rows = [line.split() for line in lines if line.split()[:1] in ([str(i)] for i in range(1, 11))]
    assert [row[1] for row in rows] == [r["run_id"] for r in doc["runs"]]  # the whole id
    # the narrow table: #, run, conf., lost, not kept, dups, verdict
    assert [row[2:6] for row in rows][2] == ["2000", "41", "7", "0"]
    (total,) = [line.split() for line in lines if line.split()[:1] == ["all"]]
    assert total == ["all", "20000", "41", "7", "0", "1", "broken"]
    assert "lost in 1 of 10 runs; 41 of 20,000 confirmed lost (in 1 run)" in lines


def test_the_cli_prints_repeat_json_with_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (line,) = cli_run(monkeypatch, tmp_path, "--repeat", "3", "--json")
    (folder,) = tmp_path.iterdir()
    assert json.loads(line) == json.loads((folder / REPEAT_JSON).read_text())


@pytest.mark.parametrize(("width", "shows"), [(80, "dups"), (200, "deliv.")])
def test_the_repeat_table_fits_the_terminal(tmp_path: Path, width: int, shows: str) -> None:
    doc = fake_repeat(Scenario(transport="kafka", run_id="20250101-120000-1a2b3c"), 12, tmp_path)
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(lab_cli.repeat_table(doc, width))
    text = out.getvalue()
    assert max(map(len, text.splitlines())) <= width
    assert shows in text and "…" not in text
    assert all(r["run_id"] in text for r in doc["runs"])


def test_the_repeat_table_keeps_its_title_on_one_line(tmp_path: Path) -> None:
    cell = Scenario(transport="redis-streams", profile="at-most-once", fault="consumer-kill")
    for i in range(6):
        fake_run(tmp_path, float(i), 0, scenario=cell)
    doc = write(tmp_path, cell, 6, interrupted=False)
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(lab_cli.repeat_table(doc, 80))
    assert "redis-streams at-most-once, consumer-kill: 6 of 6 runs" in out.getvalue()


# -- the page, as a browser reads it --------------------------------------------------------------


class RepeatPage(HTMLParser):
    """What a repetition's page shows: the findings, the chart's y ticks (px, value) and bars
    (run, count, top px, height px), and the runs table's rows (cell texts, link)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.findings: list[str] = []
        self.ticks: list[tuple[float, float]] = []
        self.bars: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self._in: str | None = None  # the element whose text is being read: li, tick, td
        self._text = ""
        self._tick_px = 0.0
        self._table: str | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "ul" and a.get("id") == "findings":
            self._table = "findings"
        elif tag == "table":
            self._table = a.get("id")
        elif tag == "li" and self._table == "findings":
            self._in, self._text = "li", ""
        elif tag == "line" and self._in == "tick":
            self._tick_px = float(a["y1"])
        elif tag == "g" and a.get("class") == "y-tick":
            self._in, self._text = "tick", ""
        elif tag == "rect" and a.get("class") == "bar":
            y, height = float(a["y"]), float(a["height"])
            self.bars.append({"run": int(a["data-run"]), "count": a["data-count"], "y": y})
            self.bars[-1] |= {"height": height, "width": float(a["width"])}
        elif tag == "tr" and self._table == "runs":
            self.rows.append({"cells": [], "href": None})
        elif tag == "td" and self._table == "runs":
            self._in, self._text = "td", ""
        elif tag == "a" and self._table == "runs":
            self.rows[-1]["href"] = a["href"]

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "li" and self._in == "li":
            self.findings.append(self._text)
            self._in = None
        elif tag == "g" and self._in == "tick":
            self.ticks.append((self._tick_px, number(self._text)))
            self._in = None
        elif tag == "td" and self._in == "td":
            self.rows[-1]["cells"].append(self._text)
            self._in = None
        elif tag in ("table", "ul"):
            self._table = None


def test_the_page_shows_each_run_and_what_they_add_up_to(tmp_path: Path) -> None:
    folder = tmp_path / "first-x10"
    losses = [(0, 0), (0, 0), (41, 7), (0, 0), (0, 120), (0, 0), (3, 0), (0, 0), (0, 0), (0, 0)]
    for i, (lost, stored) in enumerate(losses):
        fake_run(folder, float(i), lost, stored=stored, dups=i % 3)
    doc = write(folder, SCENARIO, 10, interrupted=False)
    page = folder / "report.html"
    dom = chromium(f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()).stdout
    shown = RepeatPage(dom)  # as the browser parsed it
    assert shown.findings == findings(doc)
    assert shown.findings[0] == "lost in 3 of 10 runs; 44 of 20,000 confirmed lost (in 2 runs)"
    _header, *rows, total = shown.rows
    assert len(rows) == 10
    for i, row in enumerate(rows):
        run_folder = (folder / row["href"]).parent
        assert row["href"].endswith("/report.html") and (folder / row["href"]).exists()
        report = json.loads((run_folder / "report.json").read_text())  # not repeat.json
        assert row["cells"][:2] == [str(i + 1), report["run_id"]]
        counts = ("sent", "confirmed", "delivered", "lost", "lost_from_storage")
        assert row["cells"][2:7] == [str(report[k]) for k in counts]
        assert row["cells"][-1] == report["verdict"]
        assert (report["lost"], report["lost_from_storage"]) == losses[i]
    assert total["cells"][1:7] == ["all", "20000", "20000", "19956", "44", "127"]
    assert total["cells"][-1] == "2 broken"
    # the bars, read off the chart's axis, are each run's lost and lost from storage
    y = axis(sorted(shown.ticks, reverse=True))
    assert len(shown.ticks) >= 3 and shown.ticks[0][1] == 0
    for bar in shown.bars:
        lost, stored = losses[bar["run"] - 1]
        expected = lost if bar["count"] == "lost" else stored
        assert abs(y(bar["y"]) - expected) < 1, bar
        assert abs(y(bar["y"] + bar["height"])) < 1e-6  # standing on 0
    assert sorted((b["run"], b["count"]) for b in shown.bars) == sorted(
        (run, count) for run in range(1, 11) for count in ("lost", "lost_from_storage")
    )
    # and the browser paints them: at least 90 % of their area in their colour
    seen = Counter(screenshot(page, tmp_path, 1400))
    for count, colour in (("lost", LOST), ("lost_from_storage", COLORS["lost_from_storage"])):
        area = sum(b["width"] * b["height"] for b in shown.bars if b["count"] == count)
        assert area > 100 and seen[rgb(colour)] >= 0.9 * area, count


# -- on the real servers ------------------------------------------------------------------------


def msglab(*args: str) -> subprocess.CompletedProcess[str]:
    """``msglab ARGS`` as a user runs it, its output in a pipe 80 columns wide."""
    return subprocess.run(
        [sys.executable, "-m", "msglab", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "80"},
    )


def recounted_lost(run_folder: Path) -> int:
    """Confirmed messages never delivered, from the run's raw files (not its report)."""
    sends, deliveries = jsonl(run_folder, "sends"), jsonl(run_folder, "deliveries")
    return len({s["id"] for s in sends if s["outcome"] == "ok"} - {d["id"] for d in deliveries})


def repetition(runs_dir: Path, times: int) -> tuple[Path, dict[str, Any]]:
    """The one repetition folder in ``runs_dir``, and its repeat.json checked against a
    recomputation from its run folders."""
    (folder,) = runs_dir.iterdir()
    assert folder.name.endswith(f"-x{times}")
    doc = json.loads((folder / REPEAT_JSON).read_text())
    assert {k: doc[k] for k in ("runs", "left_out", "summary")} == aggregate(folder)
    for r in doc["runs"]:
        assert r["lost"] == recounted_lost(folder / r["folder"])
    return folder, doc


@pytest.mark.redis
@pytest.mark.postgres
def test_three_runs_of_one_cell_each_in_its_folder(tmp_path: Path) -> None:
    result = msglab(
        *("run", "-t", "redis-streams", "--repeat", "3", "-n", "300"),
        *("--runs-dir", str(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    folder, doc = repetition(tmp_path, 3)
    runs = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(runs) == 3 and all((p / "report.json").exists() for p in runs)
    assert len({json.loads((p / "report.json").read_text())["run_id"] for p in runs}) == 3
    assert [r["confirmed"] for r in doc["runs"]] == [300] * 3
    assert doc["summary"]["runs"] == 3 and doc["summary"]["runs_that_lost"] == 0
    lines = result.stdout.splitlines()
    for i, r in enumerate(doc["runs"], 1):  # a line as it finished, then its row
        assert f"[{i}/3] {r['run_id']}: lost 0 of 300, dups 0, kept" in lines
        (row,) = [line.split() for line in lines if line.split()[:2] == [str(i), r["run_id"]]]
        assert row[2:] == ["300", "0", "0", "kept"]
    assert "lost in 0 of 3 runs; 0 of 900 confirmed lost" in lines
    assert max(len(line) for line in lines if not line.startswith(("report:", "data:"))) <= 80
    page = (folder / "report.html").read_text()
    assert all(f'href="{r["folder"]}/report.html"' in page for r in doc["runs"])


@pytest.mark.redis
@pytest.mark.postgres
def test_a_loss_shows_in_the_runs_that_lost(tmp_path: Path) -> None:
    # pub/sub keeps nothing for a consumer that is not there: while the killed consumer's
    # replacement starts, what is published is lost
    result = msglab(
        *("run", "-t", "redis-pubsub", "-p", "at-most-once", "--fault", "consumer-kill"),
        *("--repeat", "2", "-n", "1500", "--rate", "1000", "--kill-after", "300"),
        *("--runs-dir", str(tmp_path), "--json"),
    )
    assert result.returncode == 0, result.stderr
    folder, doc = repetition(tmp_path, 2)
    assert json.loads(result.stdout) == doc
    lost = [recounted_lost(folder / r["folder"]) for r in doc["runs"]]
    assert doc["summary"]["runs_that_lost"] == sum(n > 0 for n in lost) > 0
    assert doc["summary"]["counts"]["lost"]["total"] == sum(lost)
    assert findings(doc)[0].startswith(f"lost in {sum(n > 0 for n in lost)} of 2 runs; ")


@pytest.mark.redis
@pytest.mark.postgres
def test_ctrl_c_keeps_the_finished_runs_and_sums_them_up(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "msglab", "run", "-t", "redis-streams", "--repeat", "5"),
            *("-n", "2000", "--rate", "400", "--runs-dir", str(tmp_path)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("*/*/sends-p0.jsonl"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # the second run is publishing
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    folder, doc = repetition(tmp_path, 5)
    assert doc["interrupted"] is True and doc["requested"] == 5
    assert len(doc["runs"]) == 1 and doc["runs"][0]["confirmed"] == 2000
    (stopped,) = doc["left_out"]
    assert stopped["reason"] == "interrupted"
    assert json.loads((folder / stopped["folder"] / "report.json").read_text())["interrupted"]
    assert f"1  {doc['runs'][0]['run_id']}" in out  # its table, printed before aborting
    assert "lost in 0 of 1 run; 0 of 2,000 confirmed lost" in out
