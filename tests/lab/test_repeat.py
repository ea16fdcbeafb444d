"""``msglab run --repeat``: what the runs add up to, recomputed from run folders written by hand."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from msglab.errors import UsageError
from msglab.lab.repeat import COUNTS, REPEAT_JSON, aggregate, findings, write
from msglab.lab.scenario import Scenario

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
        {"folder": "failed", "reason": "no report.json: the run failed"},
    ]
    assert doc["summary"]["counts"]["lost"]["total"] == 4
    assert (doc["requested"], doc["interrupted"]) == (5, True)


def test_runs_of_another_scenario_are_refused(tmp_path: Path) -> None:
    fake_run(tmp_path, 1.0, 0)
    fake_run(tmp_path, 2.0, 0, scenario=Scenario(transport="kafka", messages=3000))
    with pytest.raises(UsageError, match="different scenarios"):
        aggregate(tmp_path)


def test_no_finished_run_is_summed_up_as_such(tmp_path: Path) -> None:
    doc = write(tmp_path, SCENARIO, 3, interrupted=True)
    assert doc["summary"]["runs"] == 0 and doc["runs"] == []
    assert findings(doc) == ["no run finished"]
