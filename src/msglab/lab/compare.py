"""``msglab compare``: the claim matrix on the real servers, one table, JSON and HTML."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from msglab.lab.html import render
from msglab.lab.matrix import FULL, QUICK, Probe, Row
from msglab.lab.probes import run_probe
from msglab.lab.run import run
from msglab.lab.scenario import Scenario
from msglab.settings import Settings

Progress = Callable[[int, int, Row | Probe], None]


def scenario_for(row: Row, quick: bool) -> Scenario:
    scale = 1 if quick else 4
    return Scenario(
        transport=row.transport,
        profile=row.profile,
        fault=row.fault,
        pattern=row.pattern,
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
    )


def compare(
    out: Path,
    quick: bool = True,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the matrix; write ``compare.json`` and ``report.html`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = QUICK if quick else FULL
    settings = settings or Settings.from_env()
    began = time.monotonic()
    results = []
    for i, row in enumerate(rows):
        if progress:
            progress(i, len(rows), row)
        if isinstance(row, Probe):
            report = run_probe(row.probe, row.variant, settings, quick)
            evidence = out / "probes" / f"{row.probe}-{row.variant}.json"
            evidence.parent.mkdir(exist_ok=True)
            evidence.write_text(json.dumps(report, indent=2) + "\n")
            report["evidence"] = str(evidence.resolve())
        else:
            report = run(scenario_for(row, quick), settings, runs_dir=out / "runs")
        results.append(
            {
                "kind": "probe" if isinstance(row, Probe) else "run",
                "claim": row.claim,
                "expect": row.expect,
                "observed": bool(row.check(report)),
                "report": report,
            }
        )
    if progress:
        progress(len(rows), len(rows), rows[-1])
    summary = {"quick": quick, "seconds": round(time.monotonic() - began, 1), "rows": results}
    (out / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.html").write_text(render(summary))
    return summary
