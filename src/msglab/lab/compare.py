"""``msglab compare``: the claim matrix on the real servers, one table, JSON and HTML."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from msglab.errors import UsageError
from msglab.lab.html import render
from msglab.lab.matrix import CLUSTERS, FULL, QUICK, Probe, Row
from msglab.lab.probes import check_servers, run_probe
from msglab.lab.repeat import repeat
from msglab.lab.run import run
from msglab.lab.scenario import Scenario
from msglab.lab.servers import plan
from msglab.settings import Settings

Progress = Callable[[int, int, Row | Probe, dict[str, Any] | None], None]
"""Called as ``(i, n, row, None)`` when row i of n starts and ``(i, n, row, result)`` when it
finished (result: its entry in the summary's ``rows``)."""


def scenario_for(row: Row, quick: bool) -> Scenario:
    scale = 1 if quick else 4
    return Scenario(
        transport=row.transport,
        profile=row.profile,
        fault=row.fault,
        pattern=row.pattern,
        workload=row.workload,
        sets=row.sets,
        messages=row.messages * scale,
        rate=row.rate,
        kill_after=row.kill_after * scale,
        consumers=row.consumers,
        keys=row.keys,
        slow_ms=row.slow_ms,
        warmup_s=row.warmup_s,
        down_s=row.down_s,
        drain_quiet_s=row.drain_quiet_s,
        drain_max_s=90.0,
        cluster=row.cluster,
        partition=row.partition,
        cut=row.cut,
        relays=row.relays,
        relay_ordering=row.relay_ordering,
    )


def repetitions(row: Row, quick: bool) -> int:
    """How many times ``row``'s cell runs: ``repeat``, half of it (at least 1) when quick."""
    return max(1, row.repeat // 2) if quick else row.repeat


def _repeated(row: Row, quick: bool, settings: Settings, runs_dir: Path) -> dict[str, Any]:
    """Run ``row``'s cell ``repetitions`` times (``lab.repeat``): the first run's report with
    every count summed over the runs (``unavailable_s``: the longest), and ``repeat``: how many
    runs, how many lost anything, and where ``repeat.json`` is."""
    doc = repeat(scenario_for(row, quick), repetitions(row, quick), settings, runs_dir)
    folder = runs_dir / doc["repeat_id"]
    first = json.loads((folder / doc["runs"][0]["folder"] / "report.json").read_text())
    counts = doc["summary"]["counts"]
    totals = {k: None if v is None else v["total"] for k, v in counts.items()}
    unavailable = counts.get("unavailable_s")
    return {
        **first,
        **totals,
        "unavailable_s": unavailable["max"] if unavailable else 0.0,
        "verdict": "broken" if doc["summary"]["runs_broken"] else "kept",
        "repeat": {
            "runs": doc["summary"]["runs"],
            "runs_that_lost": doc["summary"]["runs_that_lost"],
            "runs_broken": doc["summary"]["runs_broken"],
            "repeat_json": str((folder / "repeat.json").resolve()),
        },
    }


def price_scenario(row: Row) -> Scenario:
    """The run that prices ``row``'s settings: its cell (transport, profile, pattern, settings)
    with no fault, publishing as fast as it can in batches of ``price_batch``."""
    return replace(
        scenario_for(row, quick=True),
        fault="none",
        messages=row.price_messages,
        rate=0.0,
        batch=row.price_batch,
        kill_after=0,
        drain_quiet_s=5.0,
    )


def _price(row: Row, settings: Settings, runs_dir: Path) -> dict[str, Any]:
    report = run(price_scenario(row), settings, runs_dir=runs_dir)
    return {
        "publish_per_s": report["publish_per_s"],
        "confirmed": report["confirmed"],
        "batch": row.price_batch,
        "run_id": report["run_id"],
        "evidence_dir": report["evidence_dir"],
    }


def _baseline(row: Row, quick: bool, settings: Settings, runs_dir: Path) -> dict[str, Any]:
    """The run ``row``'s workload is measured against: its cell without the workload."""
    report = run(replace(scenario_for(row, quick), workload="none"), settings, runs_dir=runs_dir)
    return {k: report[k] for k in ("latency_ms", "lost", "run_id", "evidence_dir")}


def refusal(row: Row | Probe, quick: bool, settings: Settings) -> str | None:
    """Why ``row`` cannot run on the servers ``settings`` name (a kill of an external server,
    a network fault on an external Kafka, a probe that must own its server), or None."""
    try:
        if isinstance(row, Probe):
            check_servers(row.probe, settings)
        else:
            plan(scenario_for(row, quick), settings)
    except UsageError as exc:
        return str(exc)
    return None


def compare(
    out: Path,
    quick: bool = True,
    settings: Settings | None = None,
    progress: Progress | None = None,
    rows: Sequence[Row | Probe] | None = None,
    clusters: bool = False,
) -> dict[str, Any]:
    """Run the matrix (``rows``, by default the quick or full one); write ``compare.json`` and
    ``report.html`` into ``out``. Rows that cannot run on the servers the user named are left
    out before anything starts and listed in the summary's ``skipped`` with the reason."""
    out.mkdir(parents=True, exist_ok=True)
    settings = settings or Settings.from_env()
    skipped = []
    runnable = []
    default = CLUSTERS if clusters else QUICK if quick else FULL
    for row in rows if rows is not None else default:
        reason = refusal(row, quick, settings)
        if reason is None:
            runnable.append(row)
        else:
            skipped.append({"row": row.label, "claim": row.claim, "reason": reason})
    rows = runnable
    began = time.monotonic()
    results = []
    for i, row in enumerate(rows):
        if progress:
            progress(i, len(rows), row, None)
        if isinstance(row, Probe):
            report = run_probe(row.probe, row.variant, settings, quick)
            evidence = out / "probes" / f"{row.probe}-{row.variant}.json"
            evidence.parent.mkdir(exist_ok=True)
            evidence.write_text(json.dumps(report, indent=2) + "\n")
            report["evidence"] = str(evidence.resolve())
        elif row.repeat > 1:
            report = _repeated(row, quick, settings, out / "runs")
        else:
            report = run(scenario_for(row, quick), settings, runs_dir=out / "runs")
        price = None
        if isinstance(row, Row) and row.price_batch:
            price = _price(row, settings, out / "runs")
        if isinstance(row, Row) and row.baseline:
            report["baseline"] = _baseline(row, quick, settings, out / "runs")
        result = {
            "kind": "probe" if isinstance(row, Probe) else "run",
            "claim": row.claim,
            "expect": row.expect,
            "observed": bool(row.check(report)),
            "report": report,
            "price": price,
            "published": row.published if isinstance(row, Row) else "",
        }
        results.append(result)
        if progress:
            progress(i, len(rows), row, result)
    seconds = round(time.monotonic() - began, 1)
    summary = {
        "quick": quick,
        "clusters": clusters,
        "seconds": seconds,
        "rows": results,
        "skipped": skipped,
    }
    (out / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.html").write_text(render(summary))
    return summary
