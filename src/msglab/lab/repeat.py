"""``msglab run --repeat N``: the same cell N times, each run a folder of its own, and what the
runs add up to (a loss that shows once in ten is a finding, not noise).

The runs of one repetition share a folder, ``<runs_dir>/<first run id>-x<N>/``, holding one
run folder per run (``lab.run``'s ``<run id>/``: evidence, ``report.json``, ``report.html``),
``repeat.json`` and ``report.html``. ``aggregate`` reads the run folders' ``report.json`` files
and nothing else, so ``repeat.json``'s ``runs``, ``left_out`` and ``summary`` can be recomputed
from the run folders at any time.

Each repetition is a fresh run of the same scenario: its own run id (so its own topic, groups,
rows and evidence), the same seed (it draws only the payload's bytes) and every other field as
given. What differs between them is the timing of the real servers and processes, which is
what decides whether a message is lost.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from msglab.errors import UsageError
from msglab.lab.checker import MEASURES, promise
from msglab.lab.html import repeat_page
from msglab.lab.run import preflight, run
from msglab.lab.scenario import Scenario, new_run_id
from msglab.settings import Settings

REPEAT_JSON = "repeat.json"
COUNTS = tuple(key for key, _ in MEASURES if key != "throughput_per_s")
"""The counts of a run that ``repeat.json`` keeps per run and sums up (``lost_from_storage``:
None where the run did not measure it)."""

Progress = Callable[[int, int, str, float], None]
"""Called as ``(i, n, stage, fraction sent)`` while repetition i (from 0) of n runs."""
Finished = Callable[[int, int, dict[str, Any]], None]
"""Called as ``(i, n, report)`` when repetition i (from 0) of n finished."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a repetition; ``doc``: ``repeat.json`` of the runs that
    finished, written before this was raised."""

    def __init__(self, doc: dict[str, Any]) -> None:
        super().__init__()
        self.doc = doc


def repeat(
    scenario: Scenario,
    times: int,
    settings: Settings | None = None,
    runs_dir: Path = Path("runs"),
    progress: Progress | None = None,
    finished: Finished | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` ``times`` times (the first run keeps its run id, each other one gets a
    new one) into ``<runs_dir>/<run id>-x<times>/``; write and return ``repeat.json``. Ctrl-C
    keeps the finished runs: ``repeat.json`` sums them up, then ``Interrupted`` is raised. A
    run that fails leaves ``repeat.json`` of the runs before it, and its error is raised."""
    if times < 1:
        raise UsageError("--repeat must be at least 1")
    settings = settings or Settings.from_env()
    preflight(scenario, settings)  # what a run refuses, refused before the folder exists
    folder = runs_dir / f"{scenario.run_id}-x{times}"
    folder.mkdir(parents=True, exist_ok=False)
    interrupted = False
    try:
        for i in range(times):
            cell = scenario if i == 0 else replace(scenario, run_id=new_run_id())
            report = run(cell, settings, folder, partial(progress, i, times) if progress else None)
            if finished:
                finished(i, times, report)
    except KeyboardInterrupt:
        interrupted = True
    finally:  # also when a run failed: the finished ones are summed up
        doc = write(folder, scenario, times, interrupted)
    if interrupted:
        raise Interrupted(doc)
    return doc


def write(folder: Path, scenario: Scenario, requested: int, interrupted: bool) -> dict[str, Any]:
    """``repeat.json`` of the repetition in ``folder`` (written there, with its ``report.html``):
    what was asked (``requested`` runs of ``scenario``), and ``aggregate(folder)``."""
    cell = {key: value for key, value in scenario.to_json().items() if key != "run_id"}
    doc = {
        "repeat_id": folder.name,
        "requested": requested,
        "interrupted": interrupted,
        **{k: cell[k] for k in ("transport", "profile", "fault", "workload", "pattern", "sets")},
        "promise": promise(scenario.profile, scenario.pattern),
        "scenario": cell,
        **aggregate(folder),
    }
    (folder / REPEAT_JSON).write_text(json.dumps(doc, indent=2) + "\n")
    (folder / "report.html").write_text(repeat_page(doc, findings(doc)))
    return doc


def aggregate(folder: Path) -> dict[str, Any]:
    """From the run folders in ``folder`` alone (their ``report.json``), in the order they
    started (``run.json``): ``runs`` (one entry per finished run: its id, folder, verdict,
    seconds and counts), ``left_out`` (run folders without a report, or whose run was
    interrupted, with the reason) and ``summary`` (``summarize``)."""
    runs: list[dict[str, Any]] = []
    left_out: list[dict[str, str]] = []
    cells: set[str] = set()
    for sub in run_folders(folder):
        path = sub / "report.json"
        if not path.exists():
            left_out.append(
                {"folder": sub.name, "reason": "no report.json: the run did not finish"}
            )
            continue
        report = json.loads(path.read_text())
        if report.get("interrupted"):
            left_out.append({"folder": sub.name, "reason": "interrupted"})
            continue
        cell = {k: v for k, v in report.get("scenario", {}).items() if k != "run_id"}
        cells.add(json.dumps(cell, sort_keys=True))
        runs.append(
            {
                "run_id": report["run_id"],
                "folder": sub.name,
                "verdict": report["verdict"],
                "seconds": report.get("seconds"),
                **{key: report.get(key) for key in COUNTS},
            }
        )
    if len(cells) > 1:
        raise UsageError(f"{folder} holds runs of different scenarios: not one repetition")
    return {"runs": runs, "left_out": left_out, "summary": summarize(runs)}


def run_folders(folder: Path) -> list[Path]:
    """The run folders in ``folder``, in the order their runs started (``run.json``'s
    ``started``; by name where there is none)."""

    def started(sub: Path) -> tuple[float, str]:
        meta = sub / "run.json"
        at = json.loads(meta.read_text()).get("started") if meta.exists() else None
        return (math.inf if at is None else float(at), sub.name)

    return sorted((p for p in folder.iterdir() if p.is_dir()), key=started)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``runs``: how many; ``runs_that_lost``: those with ``lost`` > 0 or ``lost_from_storage``
    > 0; ``runs_broken``: those whose promise was broken; ``seconds``: their sum; ``counts``: per
    count of ``COUNTS``, its ``total`` over the runs, ``in_runs`` (runs where it is > 0),
    ``min``, ``median`` and ``max`` (None: no run measured it)."""
    counts: dict[str, dict[str, float] | None] = {}
    for key in COUNTS:
        values = [r[key] for r in runs if r.get(key) is not None]
        counts[key] = (
            {
                "total": sum(values),
                "in_runs": sum(1 for v in values if v > 0),
                "min": min(values),
                "median": _whole(statistics.median(values)),
                "max": max(values),
            }
            if values
            else None
        )
    return {
        "runs": len(runs),
        "runs_that_lost": sum(1 for r in runs if r["lost"] or r.get("lost_from_storage")),
        "runs_broken": sum(1 for r in runs if r["verdict"] == "broken"),
        "seconds": round(sum(r["seconds"] or 0 for r in runs), 1),
        "counts": counts,
    }


def _whole(value: float) -> float:
    """An int when ``value`` is a whole number (the median of an odd number of counts)."""
    return int(value) if float(value).is_integer() else value


def findings(doc: dict[str, Any]) -> list[str]:
    """What a repetition found, one sentence a line: in how many runs something was lost (and
    how much of what was confirmed), from storage when measured, unconfirmed, duplicated, and
    how often the promise was broken."""
    s = doc["summary"]
    c, of_n = s["counts"], f"of {_runs(s['runs'])}"
    if not s["runs"]:
        return ["no run finished"]
    confirmed = c["confirmed"]["total"]
    lost = f"{c['lost']['total']:,} of {confirmed:,} confirmed lost"
    if c["lost_from_storage"] is None:
        lines = [f"lost in {s['runs_that_lost']} {of_n}; {lost}"]
    else:
        stored = c["lost_from_storage"]
        lines = [
            f"lost in {s['runs_that_lost']} {of_n}; {lost} (in {_runs(c['lost']['in_runs'])})",
            f"lost from storage in {stored['in_runs']} {of_n}; "
            f"{stored['total']:,} of {confirmed:,} confirmed not kept",
        ]
    if c["unconfirmed_lost"]["total"]:
        unconfirmed = c["unconfirmed_lost"]
        lines.append(
            f"unconfirmed lost in {unconfirmed['in_runs']} {of_n}; {unconfirmed['total']:,} in all"
        )
    dups = c["duplicate_effects"]
    lines.append(f"duplicate effects in {dups['in_runs']} {of_n}; {dups['total']:,} in all")
    lines.append(f"promise ({doc['promise']}) broken in {s['runs_broken']} {of_n}")
    return lines


def _runs(n: int) -> str:
    return f"{n} run{'' if n == 1 else 's'}"
