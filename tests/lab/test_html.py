"""The comparison report and a run's report: their timelines read back against the evidence,
and the pages looked at in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from msglab.lab.checker import check
from msglab.lab.evidence import SENDS, read
from msglab.lab.heatmap import red
from msglab.lab.html import render, run_page
from msglab.lab.timeline import CURVES
from msglab.lab.timeline_chart import FAULT_FILL, LOST, STYLES
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


FAULTS = [
    {"ts": 100.5, "fault": "broker-kill", "action": "kill", "target": "kafka"},
    {"ts": 101.0, "fault": "broker-kill", "action": "restart", "target": "kafka"},
]


def fake_run(folder: Path, fault: str, lose: int) -> dict[str, Any]:
    """Evidence of a small run written by hand (and its report.json): 20 messages sent 0.1 s
    apart from t=100, the broker down from 100.5 to 101.0 (nothing delivered meanwhile), the
    first ``lose`` of them never delivered."""
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
            at = max(100.05 + i / 10, 101.05 if 100.5 <= base["sent_ts"] < 101.0 else 0.0)
            deliveries.append({"ts": at, "consumer": "c0", "id": f"m{i}"})
            effects.append({"id": f"m{i}", "consumer": "c0", "ts": at + 0.01})
    for name, records in (
        ("sends-p0", sends),
        ("deliveries-c0", deliveries),
        ("effects-db", effects),
        ("faults-orchestrator", FAULTS),
    ):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    counts = asdict(check(sends, deliveries, effects))
    report = {
        **counts,
        "run_id": folder.name,
        "transport": "kafka",
        "profile": "at-least-once",
        "fault": fault,
        "promise": "lost == 0",
        "verdict": "kept" if counts["lost"] == 0 else "broken",
        "evidence_dir": str(folder),
        "faults": FAULTS,
        "simulated": None,
    }
    (folder / "report.json").write_text(json.dumps(report))
    return report


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


class Charts(HTMLParser):
    """The timeline charts of a page as a reader sees them: the tick values at their px, the
    corners of each curve, the fault windows' px and the texts with a class."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.charts: list[dict[str, Any]] = []
        self._tick: list[Any] | None = None  # [axis, px, text]
        self._text: list[str] | None = None  # [class, text]
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        cls = a.get("class", "")
        if tag == "svg" and cls == "timeline":
            self.charts.append({"x": [], "y": [], "curves": {}, "faults": [], "texts": []})
        if not self.charts:
            return
        chart = self.charts[-1]
        if tag == "g" and cls in ("x-tick", "y-tick"):
            self._tick = [cls[0], 0.0, ""]
        elif tag == "line" and self._tick is not None:
            self._tick[1] = float(a[f"{self._tick[0]}1"])
        elif tag == "polyline":
            chart["curves"][a["data-curve"]] = [
                tuple(float(v) for v in p.split(",")) for p in a["points"].split()
            ]
        elif tag == "rect" and cls == "fault-window":
            x, width, height = (float(a[k]) for k in ("x", "width", "height"))
            chart["faults"].append((x, x + width))
            chart["fault_px"] = chart.get("fault_px", 0.0) + width * height
        elif tag == "text":
            self._text = [cls, ""]

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "text" and self._text is not None:
            if self._tick is not None:
                self._tick[2] = self._text[1]
            else:
                self.charts[-1]["texts"].append(tuple(self._text))
            self._text = None
        elif tag == "g" and self._tick is not None:
            axis, px, text = self._tick
            self.charts[-1][axis].append((px, number(text)))
            self._tick = None


def number(text: str) -> float:
    """A tick label's value: 2M, 40k, 5,000, 2.5."""
    scale = {"k": 1e3, "M": 1e6}.get(text[-1], 1.0)
    return float(text.rstrip("kM").replace(",", "")) * scale


def axis(ticks: list[tuple[float, float]]) -> Callable[[float], float]:
    """px -> value, read off the axis' first and last tick."""
    (p0, v0), (p1, v1) = ticks[0], ticks[-1]
    return lambda px: v0 + (px - p0) * (v1 - v0) / (p1 - p0)


def shows_the_evidence(chart: dict[str, Any], folder: Path) -> None:
    """The chart of the run in ``folder`` against its report.json and evidence files: the
    curves end at the counts, the lost gap is labelled, the fault is where its records say,
    and no delivery is drawn while the broker was down."""
    report = json.loads((folder / "report.json").read_text())
    x, y = axis(chart["x"]), axis(chart["y"])
    assert len(chart["x"]) >= 3 and len(chart["y"]) >= 3
    for curve in ("sent", "confirmed", "delivered"):
        assert round(y(chart["curves"][curve][-1][1])) == report[curve], curve
    labels = [text for cls, text in chart["texts"] if cls == "lost"]
    assert labels == ([f"lost {report['lost']:,}"] if report["lost"] else [])
    start = min(s["sent_ts"] for s in read(folder, SENDS))
    kill, back = (f["ts"] - start for f in read(folder, "faults"))
    ((left, right),) = chart["faults"]
    px = (chart["x"][-1][0] - chart["x"][0][0]) / (chart["x"][-1][1] - chart["x"][0][1])
    assert abs(x(left) - kill) <= 1 / px and abs(x(right) - back) <= 1 / px
    during = {n for t, n in chart["curves"]["delivered"] if left + 1 < t < right - 1}
    assert len(during) <= 1  # flat: no delivery while the broker was down


def test_the_timelines_show_the_evidence(report_html: Path, tmp_path: Path) -> None:
    compare = Charts(report_html.read_text()).charts
    single_page = run_page(tmp_path / "run1")
    (single,) = Charts(single_page).charts
    assert len(compare) == 2
    for chart, folder in zip((*compare, single), ("run0", "run1", "run1"), strict=True):
        shows_the_evidence(chart, tmp_path / folder)
    start = min(s["sent_ts"] for s in read(tmp_path / "run1", SENDS))
    for f in FAULTS:  # the run's page lists its faults, timed as its chart is
        assert f"<li>{f['ts'] - start:.2f} s: {f['action']} {f['target']} " in single_page


def pixels(png: bytes) -> list[tuple[int, ...]]:
    """Every pixel (r, g, b) of an 8-bit RGB or RGBA PNG, as a browser's screenshot is."""
    width, height, depth, kind = struct.unpack(">IIBB", png[16:26])
    assert depth == 8 and kind in (2, 6), (depth, kind)
    channels = 3 if kind == 2 else 4
    data, at = b"", 8
    while at < len(png):
        (size,), name = struct.unpack(">I", png[at : at + 4]), png[at + 4 : at + 8]
        if name == b"IDAT":
            data += png[at + 8 : at + 8 + size]
        at += 12 + size
    raw, stride, found = zlib.decompress(data), width * channels, []
    previous = bytearray(stride)
    for row in range(height):
        line = raw[row * (stride + 1) : (row + 1) * (stride + 1)]
        kind, current = line[0], bytearray(line[1:])
        for i in range(stride):
            a = current[i - channels] if i >= channels else 0
            b, c = previous[i], previous[i - channels] if i >= channels else 0
            current[i] = (current[i] + (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]) & 0xFF
        found += [tuple(current[i : i + 3]) for i in range(0, stride, channels)]
        previous = current
    return found


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def rgb(colour: str) -> tuple[int, ...]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


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
    charts = Charts(dom).charts  # as the browser parsed them
    assert [sorted(c["curves"]) for c in charts] == [sorted(CURVES)] * 2
    for chart, folder in zip(charts, ("run0", "run1"), strict=True):
        shows_the_evidence(chart, tmp_path / folder)


def screenshot(page: Path, tmp_path: Path, height: int) -> list[tuple[int, ...]]:
    shot = page.with_suffix(".png")
    chromium(
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size=1200,{height}",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        page.as_uri(),
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1200, height)
    return pixels(data)


def test_the_screenshots_show_the_charts(report_html: Path, tmp_path: Path) -> None:
    single = tmp_path / "run1" / "report.html"
    single.write_text(run_page(tmp_path / "run1"))
    for page, height in ((report_html, 2600), (single, 900)):
        charts = Charts(page.read_text()).charts
        seen = Counter(screenshot(page, tmp_path, height))
        inked = sum(n for colour, n in seen.items() if colour != (255, 255, 255))
        assert inked > 0.03 * 1200 * height, page  # text, tables and charts, not a blank page
        # the shaded windows (at least half of them: curves and captions cross them) ...
        assert seen[rgb(FAULT_FILL)] > 0.5 * sum(c["fault_px"] for c in charts), page
        for curve in ("confirmed", "delivered"):  # ... curves far longer than the legend's
            assert seen[rgb(STYLES[curve][0])] > 300 * len(charts), (page, curve)  # 20 px
        lost = [t for c in charts for cls, t in c["texts"] if cls == "lost"]
        assert len(lost) == 1 and seen[rgb(LOST)] > 100, page  # its label and its bracket


CLUSTERS = (  # the cluster matrix of a real run, trimmed (tests/unit/test_heatmap.py)
    Path(__file__).parents[1] / "unit/data/compare-clusters-cl7b.trimmed-copy-of-a-real-run.json"
)


def test_the_cluster_heat_map_fits_the_page(tmp_path: Path) -> None:
    """The heat map in a 1200 px window: its cells painted, the last column (power-cut all,
    1,980 of 6,000 lost) inside the window, the cells of no loss the kept green."""
    summary = json.loads(CLUSTERS.read_text())
    for row in summary["rows"]:
        row["report"]["evidence_dir"] = str(tmp_path / "not-copied")
    page = tmp_path / "clusters.html"
    page.write_text(render(summary))
    seen = screenshot(page, tmp_path, 700)
    power_cut_all = [i % 1200 for i, c in enumerate(seen) if c == rgb(red(1980 / 6000))]
    assert len(power_cut_all) > 2000 and max(power_cut_all) < 1200 - 20
    kept = Counter(c for c in seen if c[1] > c[0] + 10 and c[0] == c[2])  # pale green
    assert sum(kept.values()) > 9 * 2000  # the nine cells of no loss


def test_rows_the_named_servers_cannot_take_are_listed_with_the_reason() -> None:
    reason = "--fault broker-kill cannot act on redis at <redis://h:1/0>"
    left_out = [{"row": "redis-streams broker-kill", "claim": "c", "reason": reason}]
    page = render({"quick": True, "seconds": 1.0, "rows": [], "skipped": left_out})
    expected = "<li>redis-streams broker-kill: --fault broker-kill cannot act on redis at "
    assert expected + "&lt;redis://h:1/0&gt;</li>" in page
    assert "Not run on these servers" not in render({"quick": True, "seconds": 1.0, "rows": []})


@pytest.mark.parametrize(
    ("pattern", "phantom", "shows"),
    [("publish-then-commit", 0, True), ("dual-write", 0, False), ("dual-write", 2, True)],
)
def test_phantom_is_shown_where_the_pattern_makes_them_or_when_not_zero(
    tmp_path: Path, pattern: str, phantom: int, shows: bool
) -> None:
    folder = tmp_path / "run"
    report = {**fake_run(folder, "producer-kill", 0), "pattern": pattern, "phantom": phantom}
    (folder / "report.json").write_text(json.dumps(report))
    row = (  # red when not 0
        "<tr><td>phantom (delivered, its business transaction never committed)</td>"
        f'<td class="n{" broken" if phantom else ""}">{phantom}</td></tr>'
    )
    assert (row in run_page(folder)) is shows
    table = render(
        {
            "seconds": 1.0,
            "quick": True,
            "rows": [{"claim": "c", "expect": "e", "observed": True, "report": report}],
        }
    )
    assert ("<th>phantom</th>" in table) is shows
