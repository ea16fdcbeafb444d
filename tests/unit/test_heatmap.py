"""The heat map of ``msglab compare --clusters``' report.html, drawn from trimmed copies of the
compare.json of two real runs on the clusters (tests/unit/data: every field the report draws,
as the runs wrote it; the paths to their run folders left out)."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from msglab.lab.checker import lost_either
from msglab.lab.evidence import DELIVERIES, SENDS, STORED, read
from msglab.lab.heatmap import KEPT, heatmap, percent, red
from msglab.lab.html import STYLE, render
from msglab.lab.scenario import fault_label
from msglab.lab.summary import runs

DATA = Path(__file__).parent / "data"
REAL = [
    DATA / "compare-clusters-cl7b.trimmed-copy-of-a-real-run.json",  # 11 rows: Kafka, RabbitMQ
    DATA / "compare-clusters-d1.trimmed-copy-of-a-real-run.json",  # 1 row: Redis Sentinel
]
SYSTEMS = ["kafka acks=1", "kafka acks=all", "rabbitmq", "redis-streams"]
FAULTS = [
    "leader-kill",
    "partition leader",
    "partition leader-and-clients",
    "pause",
    "power-cut one",
    "power-cut all",
]


@pytest.fixture
def summary() -> dict[str, Any]:
    """Both real summaries as one (the cluster matrix, then the Redis row)."""
    first, second = (json.loads(p.read_text()) for p in REAL)
    return {**first, "rows": first["rows"] + second["rows"]}


class Map(HTMLParser):
    """The heat map as a reader sees it: the column heads, the line heads and each cell's
    attributes and text (by system and fault)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.columns: list[str] = []
        self.lines: list[str] = []
        self.cells: dict[tuple[str, str], dict[str, str]] = {}
        self._in_map = False
        self._at: dict[str, str] | None = None  # the th or td being read
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._in_map = a.get("id") == "heatmap"
        elif self._in_map and tag in ("th", "td"):
            self._at = {**a, "tag": tag, "text": ""}
        elif self._in_map and tag == "br" and self._at is not None:
            self._at["text"] += "\n"

    def handle_data(self, data: str) -> None:
        if self._at is not None:
            self._at["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_map = False
        if tag not in ("th", "td") or self._at is None:
            return
        at, self._at = self._at, None
        if at["tag"] == "td":
            self.cells[(at["data-system"], at["data-fault"])] = at
        elif at.get("scope") == "col":
            self.columns.append(at["text"])
        elif at.get("scope") == "row":
            self.lines.append(at["text"].split("\n")[0])


def page(summary: dict[str, Any], tmp_path: Path) -> str:
    """report.html of ``summary`` (its runs' evidence folders are not in the copy)."""
    rows = copy.deepcopy(summary["rows"])
    for row in rows:
        row["report"]["evidence_dir"] = str(tmp_path / "not-copied")
    return render({**summary, "rows": rows})


def report_of(summary: dict[str, Any], transport: str, sets: list[str], **fault: str) -> Any:
    (row,) = [
        r
        for r in runs(summary)
        if r["report"]["transport"] == transport
        and r["report"]["sets"] == sets
        and all(r["report"][k] == v for k, v in fault.items())
    ]
    return row["report"]


def test_a_line_per_system_a_column_per_fault_above_the_matrix(
    summary: dict[str, Any], tmp_path: Path
) -> None:
    html = page(summary, tmp_path)
    found = Map(html)
    assert found.lines == SYSTEMS
    assert found.columns == FAULTS
    assert len(found.cells) == len(SYSTEMS) * len(FAULTS)
    assert html.index('id="heatmap"') < html.index('class="heatmap-legend"')
    assert html.index('class="heatmap-legend"') < html.index('id="matrix"')
    assert "kafka-cluster, at-least-once" in html and "redis-sentinel, at-least-once" in html


def test_a_cell_is_the_share_of_acknowledged_lost_over_the_runs(
    summary: dict[str, Any], tmp_path: Path
) -> None:
    cells = Map(page(summary, tmp_path)).cells
    for system, column, transport, sets, fault in (
        ("redis-streams", "partition leader", "redis-streams", [], {"fault": "partition"}),
        ("kafka acks=all", "power-cut all", "kafka", ["acks=all"], {"cut": "all"}),
    ):
        r = report_of(summary, transport, sets, **fault)
        assert r["lost"] == 0  # the consumers got them all: the loss is the cluster's
        share = (r["lost"] + r["lost_from_storage"]) / r["confirmed"]
        cell = cells[(system, column)]
        assert float(cell["data-share"]) == pytest.approx(share)
        runs_line = f"{r['repeat']['runs_that_lost']} of {r['repeat']['runs']} run"
        assert cell["text"] == f"{round(100 * share)} %\n{runs_line}"
        assert cell["class"] == "lost" and f"background:{red(share)}" in cell["style"]
        lost = r["lost"] + r["lost_from_storage"]
        assert cell["title"].startswith(f"{lost:,} of {r['confirmed']:,} acknowledged lost")
        assert cell["title"].endswith(f"; published: {summary_row(summary, r)['published']}")


def summary_row(summary: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    (row,) = [r for r in summary["rows"] if r["report"] is report]
    return row


def test_both_counts_without_the_evidence_give_at_least_the_larger(
    summary: dict[str, Any], tmp_path: Path
) -> None:
    """Kafka acks=1 cut off: 3,974 never delivered and 3,974 not kept (the same ones, as its
    run folders show): without them, the map does not add them up but says "at least"."""
    r = report_of(summary, "kafka", ["acks=1"], fault="partition")
    cell = Map(page(summary, tmp_path)).cells[("kafka acks=1", "partition leader")]
    low = max(r["lost"], r["lost_from_storage"])
    high = min(r["lost"] + r["lost_from_storage"], r["confirmed"])
    assert float(cell["data-share"]) == pytest.approx(low / r["confirmed"])
    assert cell["text"].startswith(f"≥ {round(100 * low / r['confirmed'])} %")
    assert cell["title"].startswith(f"{low:,} to {high:,} of {r['confirmed']:,}")


def test_no_loss_is_the_pages_kept_colour(summary: dict[str, Any], tmp_path: Path) -> None:
    cells = Map(page(summary, tmp_path)).cells
    r = report_of(summary, "rabbitmq", [], fault="leader-kill")
    assert r["lost"] == r["lost_from_storage"] == 0
    cell = cells[("rabbitmq", "leader-kill")]
    assert cell["text"] == "0\n0 of 2 runs" and cell["class"] == "kept"
    assert cell["style"] == f"background:{KEPT}"
    kept = re.search(r"\.kept\{color:#(\w\w?)(\w\w?)(\w\w?)\}", STYLE)  # #070: short hex
    assert kept is not None
    green = tuple(int(h * (3 - len(h)), 16) for h in kept.groups())
    assert KEPT.startswith(f"rgba({green[0]},{green[1]},{green[2]},")
    zeros = [c for c in cells.values() if c.get("data-share") == "0.0"]
    assert len(zeros) == 9 and all(c["class"] == "kept" for c in zeros)


def test_a_combination_not_run_is_a_grey_dash(summary: dict[str, Any], tmp_path: Path) -> None:
    cells = Map(page(summary, tmp_path)).cells
    for key in (("redis-streams", "leader-kill"), ("kafka acks=1", "pause")):
        assert cells[key]["text"] == "-" and cells[key]["class"] == "none", key
        assert "data-share" not in cells[key]
    drawn = {(c["data-system"], c["data-fault"]) for c in cells.values() if "data-share" in c}
    assert len(drawn) == len(runs(summary))  # one cell per row: no two share a cell here


def test_no_map_without_cluster_rows(summary: dict[str, Any], tmp_path: Path) -> None:
    single = copy.deepcopy(summary)
    for row in single["rows"]:
        row["report"]["cluster"] = False
    html = page(single, tmp_path)
    assert "<h2>Acknowledged messages lost" not in html and 'id="matrix"' in html
    assert 'id="heatmap"' not in html and 'class="heatmap-legend"' not in html
    assert heatmap([]) == ""
    assert Map(page(summary, tmp_path)).cells  # the same rows on their clusters: a map


def test_rows_of_one_system_and_fault_add_up(summary: dict[str, Any]) -> None:
    rows = [r for r in runs(summary) if r["report"]["transport"] == "redis-streams"]
    twice = [rows[0], copy.deepcopy(rows[0])]
    twice[1]["report"]["lost_from_storage"] = 0
    twice[1]["report"]["repeat"]["runs_that_lost"] = 0
    cell = Map(heatmap(twice)).cells[("redis-streams", "partition leader")]
    r = rows[0]["report"]
    assert float(cell["data-share"]) == pytest.approx(r["lost_from_storage"] / (2 * r["confirmed"]))
    assert cell["text"].endswith("\n1 of 2 runs")


def write_run(folder: Path, confirmed: int, undelivered: range, not_kept: range) -> None:
    """A run folder's evidence: ``confirmed`` messages m0.. confirmed, those of
    ``undelivered`` never delivered, those of ``not_kept`` not in the storage group's read."""
    folder.mkdir(parents=True)
    sends, deliveries, stored = [], [], []
    for i in range(confirmed):
        base = {"sent_ts": 1.0 + i, "producer": "p0", "seq": i, "id": f"m{i}", "try": 1}
        sends += [{**base, "outcome": "sending"}, {**base, "outcome": "ok", "ts": 1.5 + i}]
        if i not in undelivered:
            deliveries.append({"ts": 2.0 + i, "consumer": "c0", "id": f"m{i}"})
        if i not in not_kept:
            stored.append({"ts": 90.0, "consumer": "s0", "id": f"m{i}"})
    for name, records in (
        ("sends-p0", sends),
        ("deliveries-c0", deliveries),
        ("stored-s0", stored),
    ):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_a_message_lost_both_ways_counts_once(summary: dict[str, Any], tmp_path: Path) -> None:
    """Two runs of 10: m0-m3 never delivered, m2-m5 not kept (6 lost, not 8), then m0-m1 and
    m0-m1 (2): the cell reads the overlap from the run folders of the row's repeat.json."""
    write_run(tmp_path / "x2" / "a", 10, range(0, 4), range(2, 6))
    write_run(tmp_path / "x2" / "b", 10, range(0, 2), range(0, 2))
    per_run = [
        lost_either(*(read(tmp_path / "x2" / f, k) for k in (SENDS, DELIVERIES, STORED)))
        for f in ("a", "b")
    ]
    assert per_run == [(4, 4, 6), (2, 2, 2)]
    (tmp_path / "x2" / "repeat.json").write_text(
        json.dumps({"runs": [{"folder": "a"}, {"folder": "b"}]})
    )
    row = copy.deepcopy(runs(summary)[2])  # Kafka acks=1, partition
    row["report"].update(
        confirmed=20,
        lost=6,
        lost_from_storage=6,
        repeat={"runs": 2, "runs_that_lost": 2, "repeat_json": str(tmp_path / "x2/repeat.json")},
    )
    cell = Map(heatmap([row])).cells[("kafka acks=1", "partition leader")]
    assert float(cell["data-share"]) == pytest.approx(8 / 20)
    assert cell["text"] == "40 %\n2 of 2 runs"
    assert "8 of 20 acknowledged lost (6 never delivered, 6 not kept" in cell["title"]
    assert "each message counted once" in cell["title"]
    row["report"]["lost"] = 7  # the folders are not the row's runs: not trusted
    cell = Map(heatmap([row])).cells[("kafka acks=1", "partition leader")]
    assert cell["text"].startswith("≥ 35 %") and cell["title"].startswith("7 to 13 of 20")


def test_percent_and_the_red_scale() -> None:
    assert [percent(s) for s in (0, 0.0002, 0.00025, 1 / 3, 0.665, 0.9996, 1.0)] == [
        "0",
        "0.02 %",
        "0.025 %",
        "33 %",
        "66 %",
        "99.96 %",
        "100 %",
    ]
    shades = [red(s) for s in (1e-6, 1e-4, 1e-3, 1e-2, 0.1, 1 / 3, 1.0)]
    assert shades[0] == shades[1]  # below 0.01 %: the lightest red, still red

    def lightness(colour: str) -> int:
        return sum(int(colour[i : i + 2], 16) for i in (1, 3, 5))

    assert all(lightness(a) > lightness(b) for a, b in pairwise(shades[1:]))
    r, g, b = (int(shades[2][i : i + 2], 16) for i in (1, 3, 5))
    assert r - max(g, b) > 80  # 0.1 % is clearly red, not white


def test_fault_label_is_unchanged() -> None:
    report = {"fault": "power-cut", "cut": "all", "cluster": True, "sets": ["acks=all"]}
    assert fault_label(report) == "cluster, power-cut all, acks=all"
    assert fault_label({"fault": "partition", "partition": "halves"}) == "partition halves"
    assert fault_label({"fault": "none", "workload": "replay"}) == "replay"
    assert fault_label({"fault": "none"}) == "none"
