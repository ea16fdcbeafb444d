"""The comparison report, looked at in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from msglab.lab.checker import check
from msglab.lab.html import render
from msglab.settings import in_ci

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def fake_run(folder: Path, fault: str, lose: int) -> dict[str, Any]:
    """Evidence of a small run written by hand: 20 messages, ``lose`` of them never delivered."""
    folder.mkdir(parents=True)
    sends, deliveries, effects = [], [], []
    for i in range(20):
        base = {
            "sent_ts": 100.0 + i / 10,
            "producer": "p0",
            "seq": i,
            "id": f"m{i}",
            "key": f"k{i % 2}",
            "try": 1,
        }
        sends += [{**base, "outcome": "sending"}, {**base, "outcome": "ok", "ts": base["sent_ts"]}]
        if i >= lose:
            deliveries.append({"ts": 100.05 + i / 10, "consumer": "c0", "id": f"m{i}"})
            effects.append({"id": f"m{i}", "consumer": "c0", "ts": 100.06 + i / 10})
    for name, records in (
        ("sends-p0", sends),
        ("deliveries-c0", deliveries),
        ("effects-db", effects),
    ):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    counts = asdict(check(sends, deliveries, effects))
    return {
        **counts,
        "transport": "kafka",
        "profile": "at-least-once",
        "fault": fault,
        "verdict": "kept" if counts["lost"] == 0 else "broken",
        "evidence_dir": str(folder),
        "faults": [{"ts": 100.5, "action": "kill"}, {"ts": 101.0, "action": "restart"}],
    }


def scaling_mode(one: float, two: float) -> dict[str, Any]:
    """A mode of the scaling probe's figures: the best and two rounds per layout."""
    return {
        layout: {"best_mb_per_s": mb, "rounds": [{"mb_per_s": mb}, {"mb_per_s": mb * 0.9}]}
        for layout, mb in (("one-broker", one), ("two-brokers", two))
    }


@pytest.fixture
def report_html(tmp_path: Path) -> Path:
    rows = [
        {
            "claim": f"claim {i}",
            "expect": "lost == 0",
            "observed": lose == 0,
            "report": fake_run(tmp_path / f"run{i}", "broker-kill", lose),
        }
        for i, lose in enumerate((0, 3))
    ]
    rows.append(
        {
            "kind": "probe",
            "claim": "a read-modify-write without a lock loses updates",
            "expect": "lost updates > 0",
            "observed": True,
            "report": {
                "probe": "concurrency",
                "variant": "read-modify-write",
                "figures": {"lost_updates": 654},
                "measured": "654 of 1000 increments lost",
            },
        }
    )
    rows.append(
        {
            "kind": "probe",
            "claim": "Kafka: scales by brokers",
            "expect": "capped ratio >= 1.5",
            "observed": True,
            "report": {
                "probe": "scaling",
                "variant": "kafka-brokers",
                "figures": {
                    "quota_bytes_per_s_per_broker": 1_000_000,
                    "capped": scaling_mode(0.98, 1.87),
                    "capped_ratio": 1.91,
                    "uncapped": scaling_mode(140.0, 70.0),
                    "uncapped_ratio": 0.5,
                },
                "measured": "1 broker 0.98 MB/s, 2 brokers 1.87 MB/s",
            },
        }
    )
    page = tmp_path / "report.html"
    page.write_text(render({"quick": True, "seconds": 1.5, "rows": rows}))
    return page


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        if in_ci():
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return subprocess.run(
        [CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_browser_renders_the_table_and_the_charts(report_html: Path, tmp_path: Path) -> None:
    dom = chromium(
        f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report_html.as_uri()
    ).stdout
    assert dom.count("<tr>") == 3 + 3  # header + 2 runs, header + 2 probes
    assert 'id="probes"' in dom and "654 of 1000 increments lost" in dom
    assert "broken" in dom and "not observed" in dom
    assert dom.count("<svg") == 2 + 2 + 2  # bars, latency, a timeline per run, scaling x2
    assert "Kafka: one broker or two" in dom and "capped at 1.0 MB/s per broker: x1.91" in dom
    assert "fault window" in dom and dom.count("<polyline") == 2 * 3


def test_the_screenshot_is_a_real_picture(report_html: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    chromium(
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,1600",
        f"--screenshot={shot}",
        report_html.as_uri(),
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 1600)
    assert len(data) > 20_000  # a blank page compresses to a few KB
