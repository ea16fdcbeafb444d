"""The heat map above the matrix of ``msglab compare --clusters``' report.html: how much of
what each replicated system acknowledged it lost, under each fault.

Contract of ``heatmap(rows)`` (``rows``: a compare summary's run rows, ``summary.runs``):

* It draws only the rows whose report has ``cluster`` true; with none it returns "" (the
  other matrices' reports are unchanged).
* One line per system: the transport (``scenario.transport_label``) with the settings its run
  set (``sets``, e.g. ``acks=1``); beneath, the cluster it ran on (``brokers.CLUSTER_OF``) and
  the profile.
  One column per fault with what it cut (``scenario.happened``: ``partition
  leader-and-clients``, ``power-cut all``). Lines and columns in the order of the rows.
* A cell: the share of the acknowledged (``confirmed``) messages lost, over every run of the
  row (compare's counts are totals over the runs): lost means never delivered (``lost``) or
  not kept by the cluster (``lost_from_storage``, None where not measured), each message
  counted once. When both counts are > 0 the overlap is read from the runs' evidence
  (``checker.lost_either``, the run folders named by ``repeat.repeat_json`` or
  ``evidence_dir``); without it, the share shown is the larger count's, marked "≥", the title
  giving both bounds. Rows of the same system and fault add up into one cell.
* The cell's text: the share in percent (two significant digits: ``33 %``, ``0.02 %``; ``0``
  when nothing was lost), beneath it ``k of N runs`` (the runs that lost anything); its
  ``title``: ``x of y acknowledged lost ...; published: <the row's published figure>``. Its
  colour: the page's kept green for 0, else from light to dark red on a log scale of the share
  (0.01 % light, 1 % the page's lost red, 100 % dark); a system and fault with no row: grey,
  ``-``. A legend follows the map. Pure HTML and CSS (``STYLE``, which the page adds to its
  own when it draws a map), no script.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from msglab.brokers import CLUSTER_OF
from msglab.lab.checker import lost_either
from msglab.lab.evidence import DELIVERIES, SENDS, STORED, read
from msglab.lab.scenario import happened, transport_label
from msglab.lab.timeline_chart import LOST

STYLE = """
table.heatmap{border-collapse:separate;border-spacing:3px}
.heatmap th,.heatmap td{border:0;padding:5px 8px}
.heatmap th{font-size:13px;font-weight:600;vertical-align:bottom;background:none}
.heatmap th.system{text-align:left;vertical-align:middle;white-space:nowrap}
.heatmap th small,.heatmap td small{font-weight:normal;color:inherit;opacity:.8}
.heatmap th[scope=col]{width:104px}.heatmap td b{font-size:15px}
.heatmap td{text-align:center;line-height:1.25}
.heatmap td.none{color:#888}
.heatmap-legend{font-size:12px;color:#555;margin:4px 0 16px}
.heatmap-legend span.key{display:inline-block;margin-right:10px;white-space:nowrap}
.heatmap-legend i{display:inline-block;width:26px;height:12px;vertical-align:middle;
margin-right:4px;border-radius:2px}
"""
"""The map's CSS, for ``.heatmap`` elements only (each cell's colours are its own ``style``);
``kept`` (green text, #070) is the page's class for a kept promise."""

KEPT = "rgba(0,119,0,.15)"  # the page's kept green (#070), as a background
EMPTY = "#eee"
FLOOR = 1e-4
"""The share (0.01 %) drawn in the lightest red; smaller ones too, so any loss shows."""
REDS = ((0.0, "#fde0dc"), (0.5, LOST), (1.0, "#4a0006"))
"""The red scale: (position on the log scale from ``FLOOR`` to 1, colour)."""


@dataclass
class Cell:
    """What the rows of one system under one fault add up to."""

    confirmed: int = 0
    lost: int = 0  # never delivered
    not_kept: int | None = None  # lost from storage; None: no row measured it
    low: int = 0  # acknowledged lost, each message once (low < high: the overlap is unknown)
    high: int = 0
    runs: int = 0
    runs_that_lost: int = 0
    published: list[str] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        r = row["report"]
        low, high = counted_once(r)
        self.confirmed += r["confirmed"]
        self.lost += r["lost"]
        if r.get("lost_from_storage") is not None:
            self.not_kept = (self.not_kept or 0) + r["lost_from_storage"]
        self.low += low
        self.high += high
        rep = r.get("repeat") or {"runs": 1, "runs_that_lost": int(bool(low))}
        self.runs += rep["runs"]
        self.runs_that_lost += rep["runs_that_lost"]
        if row.get("published") and row["published"] not in self.published:
            self.published.append(row["published"])

    @property
    def share(self) -> float | None:
        """Acknowledged lost / acknowledged (at least, when the overlap is unknown); None when
        nothing was acknowledged."""
        return self.low / self.confirmed if self.confirmed else None


def counted_once(report: dict[str, Any]) -> tuple[int, int]:
    """The acknowledged messages a row lost (never delivered or not kept), each once: exact
    (low == high) when one count is 0 or the evidence is there, else (the larger count, the
    smaller of their sum and everything acknowledged)."""
    lost, not_kept = report["lost"], report.get("lost_from_storage") or 0
    if not lost or not not_kept:
        return max(lost, not_kept), max(lost, not_kept)
    exact = from_evidence(report)
    if exact is not None:
        return exact, exact
    return max(lost, not_kept), min(lost + not_kept, report["confirmed"])


def from_evidence(report: dict[str, Any]) -> int | None:
    """The messages lost or not kept, each once, summed over the row's run folders; None when
    the folders are gone or their counts are not the report's."""
    try:
        folders = run_folders(report)
        if not folders or not all(f.is_dir() for f in folders):
            return None
        totals = [0, 0, 0]
        for f in folders:
            counts = lost_either(read(f, SENDS), read(f, DELIVERIES), read(f, STORED))
            totals = [a + b for a, b in zip(totals, counts, strict=True)]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if totals[:2] != [report["lost"], report["lost_from_storage"]]:
        return None
    return totals[2]


def run_folders(report: dict[str, Any]) -> list[Path]:
    """The run folders a row's counts add up: the runs of its ``repeat.json``, or its one run's
    ``evidence_dir``."""
    rep = report.get("repeat")
    if rep:
        path = Path(rep["repeat_json"])
        return [path.parent / run["folder"] for run in json.loads(path.read_text())["runs"]]
    return [Path(report["evidence_dir"])]


def system(report: dict[str, Any]) -> tuple[str, str]:
    """A line of the map: the transport and the settings its run set (``kafka acks=1``; what
    it did not set is the cluster's, the same on every line of a transport: report.json's
    ``settings`` has them), and beneath it the cluster and the profile (``kafka-cluster,
    at-least-once``)."""
    cluster = CLUSTER_OF.get(report["transport"], "cluster")
    line = " ".join([transport_label(report), *report.get("sets", ())])
    return line, f"{cluster}, {report['profile']}"


def fault(report: dict[str, Any]) -> str:
    """A column of the map: the fault with what it cut (``partition leader``)."""
    return ", ".join(happened(report)) or "none"


def grid(
    rows: list[dict[str, Any]],
) -> tuple[list[tuple[str, str]], list[str], dict[tuple[tuple[str, str], str], Cell]]:
    """The cluster rows of ``rows`` as the map's lines, columns and cells."""
    systems: list[tuple[str, str]] = []
    faults: list[str] = []
    cells: dict[tuple[tuple[str, str], str], Cell] = {}
    for row in rows:
        r = row["report"]
        if not r.get("cluster"):
            continue
        line, column = system(r), fault(r)
        systems += [line] if line not in systems else []
        faults += [column] if column not in faults else []
        cells.setdefault((line, column), Cell()).add(row)
    return systems, faults, cells


def heatmap(rows: list[dict[str, Any]]) -> str:
    """The map of ``rows``' cluster rows with its legend, or "" when there are none."""
    systems, faults, cells = grid(rows)
    if not systems:
        return ""
    head = "".join(f'<th scope="col">{_esc(f)}</th>' for f in faults)
    lines = []
    for line in systems:
        tds = "".join(td(line, f, cells.get((line, f))) for f in faults)
        lines.append(
            f'<tr><th scope="row" class="system">{_esc(line[0])}<br>'
            f"<small>{_esc(line[1])}</small></th>{tds}</tr>"
        )
    bounded = any(c.low < c.high for c in cells.values())
    return (
        "<h2>Acknowledged messages lost, by system and fault</h2>"
        f'<table class="heatmap" id="heatmap"><tr><th></th>{head}</tr>{"".join(lines)}</table>'
        + legend(bounded)
    )


def td(line: tuple[str, str], column: str, cell: Cell | None) -> str:
    """One cell of the map (``data-system``, ``data-fault``; ``data-share`` when drawn)."""
    where = f'data-system="{_esc(line[0])}" data-fault="{_esc(column)}"'
    grey = f'class="none" {where} style="background:{EMPTY}"'
    if cell is None:
        return f'<td {grey} title="not run">-</td>'
    runs, share = f"{cell.runs_that_lost} of {_runs(cell.runs)}", cell.share
    if share is None:
        return f'<td {grey} title="nothing acknowledged">n/a<br>{runs}</td>'
    text = ("≥ " if cell.low < cell.high else "") + percent(share)
    style = f"background:{KEPT}" if share == 0 else f"background:{red(share)};color:{ink(share)}"
    return (
        f'<td class="{"kept" if share == 0 else "lost"}" {where} data-share="{share!r}" '
        f'style="{style}" title="{_esc(title(cell))}"><b>{text}</b><br><small>{runs}</small></td>'
    )


def title(cell: Cell) -> str:
    """A cell's hover text: the counts behind its share and the published figure."""
    lost = f"{cell.low:,}" if cell.low == cell.high else f"{cell.low:,} to {cell.high:,}"
    parts = f"{cell.lost:,} never delivered"
    if cell.not_kept is None:
        parts += "; not kept by the cluster: not measured"
    else:
        parts += f", {cell.not_kept:,} not kept by the cluster"
        if cell.low < cell.high:
            parts += "; how many are in both: the run folders were not there to tell"
        elif cell.lost and cell.not_kept:
            parts += ", each message counted once"
    published = " / ".join(cell.published) or "-"
    return (
        f"{lost} of {cell.confirmed:,} acknowledged lost ({parts}); lost in "
        f"{cell.runs_that_lost} of {_runs(cell.runs)}; published: {published}"
    )


def percent(share: float) -> str:
    """``share`` (0 to 1) in percent, two significant digits: ``33 %``, ``0.02 %``, ``0``;
    never ``100 %`` unless everything was lost."""
    if share <= 0:
        return "0"
    value = 100 * share
    digits = max(0, 1 - math.floor(math.log10(value)))
    while round(value, digits) >= 100 and share < 1:
        digits += 1
    text = f"{round(value, digits):.{digits}f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + " %"


def position(share: float) -> float:
    """Where ``share`` (> 0) lies on the red scale: 0 at ``FLOOR`` (and below), 1 at 100 %."""
    return min(1.0, max(0.0, math.log10(share / FLOOR) / -math.log10(FLOOR)))


def red(share: float) -> str:
    """The colour of a share > 0: ``REDS`` interpolated at its ``position``."""
    t = position(share)
    for (a, low), (b, high) in pairwise(REDS):
        if t <= b:
            f = (t - a) / (b - a)
            mixed = (round(x + (y - x) * f) for x, y in zip(_rgb(low), _rgb(high), strict=True))
            return "#" + "".join(f"{c:02x}" for c in mixed)
    return REDS[-1][1]


def ink(share: float) -> str:
    """Text over a share's red: white on the darker half."""
    return "#fff" if position(share) >= 0.45 else "#222"


def legend(bounded: bool) -> str:
    """The key under the map: kept, the red scale at each power of ten, not run."""
    keys = [f'<span class="key"><i style="background:{KEPT}"></i>0: nothing lost</span>']
    keys += [
        f'<span class="key"><i style="background:{red(s)}"></i>{"≤ " * (s == FLOOR)}'
        f"{percent(s)}</span>"
        for s in (FLOOR, 1e-3, 1e-2, 1e-1, 1.0)
    ]
    keys.append(f'<span class="key"><i style="background:{EMPTY}"></i>-: not run</span>')
    note = (
        " ≥: both counts are above 0 and the run folders were not there to count the messages "
        "in both once: at least this share (the title gives the range)."
        if bounded
        else ""
    )
    return (
        f'<div class="heatmap-legend">{"".join(keys)}<br>Each cell: the share of the messages '
        "the cluster acknowledged that were lost, never delivered or not kept (each message "
        "counted once), over all the runs of its row (red on a log scale); beneath it, how "
        "many of those runs lost any. Hover over a cell for the counts and the published "
        f"figure.{note}</div>"
    )


def _runs(n: int) -> str:
    return f"{n} run{'' if n == 1 else 's'}"


def _rgb(colour: str) -> tuple[int, ...]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def _esc(value: Any) -> str:
    return html.escape(str(value))
