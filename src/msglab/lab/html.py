"""Self-contained HTML reports (tables and inline SVG charts, no scripts): ``render`` for a
comparison, ``run_page`` for one run folder, ``repeat_page`` for the runs of ``msglab run
--repeat``.

A comparison's charts: above its table, when it has cluster rows, the heat map of the share of
acknowledged messages lost per system and fault (``heatmap``); lost and duplicate bars across
the matrix, latency percentiles per run, each run's timeline (``timeline_chart``: distinct
messages sent, confirmed, delivered and applied over time, the fault windows shaded, the lost
ones labelled), drawn from the raw evidence files of each run, and the scaling probe's rates
(one Kafka broker or two). A run's page: its timeline, large, and its counts.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from msglab.lab import heatmap, timeline
from msglab.lab.checker import ALARMING, MEASURES, shown
from msglab.lab.scenario import fault_label, transport_label
from msglab.lab.summary import probes, runs
from msglab.lab.timeline_chart import LOST, chart, label, step

COLORS = {
    "sends": "#4C78A8",
    "lost": "#E45756",
    "dups": "#B279A2",
    "lost_from_storage": "#7B3294",
}
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:4px 8px}
td.n{text-align:right}th{background:#f4f4f4}.broken{color:#b00;font-weight:bold}
.kept{color:#070}.no{color:#b60}.card{display:inline-block;margin:8px;vertical-align:top}
h3{font-size:13px;margin:4px 0}svg text{font:11px system-ui,sans-serif}
svg.timeline text{font-size:12px}
.note{color:#555}td.id{white-space:nowrap}tr.all td{font-weight:bold}
"""
EXPLAIN = (
    "Each timeline counts distinct messages over time: sent (first attempt), confirmed (by the "
    "broker, or the business transaction committed), delivered (first delivery) and effects "
    "(first effect row). A gap between confirmed and delivered at the right edge is the lost "
    "messages; shaded: a fault window (a dashed line: a fault at one moment)."
)

PHANTOM = (
    " <em>Phantom</em>: a delivered message whose business transaction never committed (the "
    "database holds no row for it after the run)."
)


def esc(value: Any) -> str:
    return html.escape(str(value))


def bars(rows: list[dict[str, Any]]) -> str:
    """Horizontal bars: lost and duplicate effects per run."""
    peak = max([1] + [max(r["report"]["lost"], r["report"]["duplicate_effects"]) for r in rows])
    width, left, height = 760, 300, 22
    parts = [
        f'<svg width="{width}" height="{height * len(rows) + 30}" role="img" '
        f'aria-label="lost and duplicate effects per run">'
    ]
    for i, row in enumerate(rows):
        r, y = row["report"], 20 + i * height
        label = f"{transport_label(r)} {r['profile']} {fault_label(r)}"
        parts.append(f'<text x="0" y="{y + 12}">{esc(label)}</text>')
        for j, (key, color) in enumerate(
            (("lost", COLORS["lost"]), ("duplicate_effects", COLORS["dups"]))
        ):
            w = (width - left - 60) * r[key] / peak
            parts.append(
                f'<rect x="{left}" y="{y + j * 9}" width="{w:.1f}" height="8" '
                f'fill="{color}"><title>{key}: {r[key]}</title></rect>'
            )
            parts.append(f'<text x="{left + w + 4:.1f}" y="{y + j * 9 + 8}">{r[key]}</text>')
    parts.append(
        f'<text x="{left}" y="12" fill="{COLORS["lost"]}">■ lost</text>'
        f'<text x="{left + 60}" y="12" fill="{COLORS["dups"]}">■ duplicate effects'
        f"</text></svg>"
    )
    return "".join(parts)


def latency(rows: list[dict[str, Any]]) -> str:
    """p50 / p95 / p99 per run on a log scale (ms)."""
    width, left, height = 860, 300, 22
    top = max([1.0] + [r["report"]["latency_ms"]["max"] for r in rows])
    scale = (width - left - 130) / math.log10(top + 1)
    parts = [
        f'<svg width="{width}" height="{height * len(rows) + 30}" role="img" '
        f'aria-label="latency percentiles per run">'
    ]
    for i, row in enumerate(rows):
        r, y = row["report"], 20 + i * height
        parts.append(
            f'<text x="0" y="{y + 12}">{esc(transport_label(r))} {esc(fault_label(r))}</text>'
        )
        for key, shade in (("p99", "#9ecae1"), ("p95", "#6baed6"), ("p50", "#2171b5")):
            w = scale * math.log10(r["latency_ms"][key] + 1)
            parts.append(
                f'<rect x="{left}" y="{y}" width="{w:.1f}" height="14" '
                f'fill="{shade}"><title>{key}: {r["latency_ms"][key]:.1f} ms'
                f"</title></rect>"
            )
        parts.append(
            f'<text x="{left + scale * math.log10(r["latency_ms"]["p99"] + 1) + 4:.1f}"'
            f' y="{y + 11}">p99 {r["latency_ms"]["p99"]:.0f} ms</text>'
        )
    parts.append('<text x="300" y="12">log scale; dark p50, mid p95, light p99</text></svg>')
    return "".join(parts)


def probe_table(rows: list[dict[str, Any]]) -> str:
    """The claims measured by probes (locks, hygiene, two-phase commit): one line each."""
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{esc(r['report']['probe'])}</td><td>{esc(r['report']['variant'])}</td>"
        f"<td>{esc(r['report']['measured'])}</td>"
        f"<td>{esc(r['claim'])}<br><small>expect: {esc(r['expect'])}</small></td>"
        f'<td class="{"kept" if r["observed"] else "no"}">'
        f"{'yes' if r['observed'] else 'not observed'}</td></tr>"
        for r in rows
    )
    head = "".join(f"<th>{h}</th>" for h in ("probe", "variant", "measured", "claim", "observed"))
    return f'<h2>Claims measured by probes</h2><table id="probes"><tr>{head}</tr>{body}</table>'


def scaling(rows: list[dict[str, Any]]) -> str:
    """The scaling probe's figures as bars: MB/s on one broker and on two, capped (each broker
    held to a quota) and uncapped, each mode on its own scale; every round is a thin bar."""
    found = [r["report"]["figures"] for r in rows if r["report"]["probe"] == "scaling"]
    if not found:
        return ""
    f = found[0]
    width, left, height = 760, 170, 26
    parts = []
    for mode in ("capped", "uncapped"):
        layouts = f[mode]
        peak = max(x["mb_per_s"] for v in layouts.values() for x in v["rounds"]) or 1.0
        title = (
            f"capped at {f['quota_bytes_per_s_per_broker'] / 1e6:.1f} MB/s per broker"
            if mode == "capped"
            else "uncapped (both brokers share this machine)"
        )
        svg = [
            f'<svg width="{width}" height="{height * len(layouts) + 24}" role="img" '
            f'aria-label="{esc(title)}"><text x="0" y="12">{esc(title)}: x{f[mode + "_ratio"]}'
            "</text>"
        ]
        for i, (layout, v) in enumerate(layouts.items()):
            y = 20 + i * height
            best = v["best_mb_per_s"]
            w = (width - left - 90) * best / peak
            svg.append(f'<text x="0" y="{y + 13}">{esc(layout)}</text>')
            svg.append(
                f'<rect x="{left}" y="{y}" width="{w:.1f}" height="14" fill="{COLORS["sends"]}">'
                f"<title>best {best} MB/s</title></rect>"
                f'<text x="{left + w + 4:.1f}" y="{y + 12}">{best:.2f} MB/s</text>'
            )
            for j, x in enumerate(v["rounds"]):
                rw = (width - left - 90) * x["mb_per_s"] / peak
                svg.append(
                    f'<rect x="{left}" y="{y + 16 + j * 3}" width="{rw:.1f}" height="2" '
                    f'fill="#999"><title>round {j + 1}: {x["mb_per_s"]} MB/s</title></rect>'
                )
        svg.append("</svg>")
        parts.append("".join(svg))
    return "<h2>Kafka: one broker or two</h2>" + "<br>".join(parts)


def render(summary: dict[str, Any]) -> str:
    rows = runs(summary)
    # phantom: a column where a row shows it (its pattern makes phantoms, or it has some)
    phantoms = any(
        shown("phantom", r["report"].get("phantom"), r["report"].get("pattern", "direct"))
        for r in rows
    )
    counts: tuple[str, ...] = ("sent", "confirmed", "delivered", "lost", "lost_from_storage")
    counts += ("phantom",) if phantoms else ()
    head = (
        "transport",
        "profile",
        "fault",
        "sent",
        "confirmed",
        "delivered",
        "lost",
        "lost from storage",
        *(["phantom"] if phantoms else []),
        "dup. effects",
        "reordered",
        "p99 ms",
        "publish/s without the fault",
        "verdict",
        "claim",
        "observed",
    )
    body = []
    for row in rows:
        r = row["report"]
        cells = [esc(transport_label(r)), esc(r["profile"]), esc(fault_label(r))]
        cells += [f'<td class="n">{_dash(r.get(k))}</td>' for k in counts]
        cells += [f'<td class="n">{r[k]}</td>' for k in ("duplicate_effects", "reordered")]
        cells = [f"<td>{c}</td>" if not c.startswith("<td") else c for c in cells]
        cells.append(f'<td class="n">{r["latency_ms"]["p99"]:.0f}</td>')
        price = row.get("price")
        cells.append(
            f'<td class="n" title="{price["batch"]} per publish call or transaction, no fault">'
            f"{price['publish_per_s']:,.0f}</td>"
            if price
            else '<td class="n">-</td>'
        )
        cells.append(f'<td class="{r["verdict"]}">{r["verdict"]}</td>')
        published = row.get("published")
        rep = r.get("repeat")
        cells.append(
            f"<td>{esc(row['claim'])}<br><small>expect: {esc(row['expect'])}</small>"
            + (
                f"<br><small>runs: {rep['runs']}, lost in {rep['runs_that_lost']}; the counts "
                "are their totals</small>"
                if rep
                else ""
            )
            + (
                f'<br><small class="published">published: {esc(published)}</small>'
                if published
                else ""
            )
            + "</td>"
        )
        cells.append(
            f'<td class="{"kept" if row["observed"] else "no"}">'
            f"{'yes' if row['observed'] else 'not observed'}</td>"
        )
        body.append("<tr>" + "".join(cells) + "</tr>")
    cards = "".join(
        f'<div class="card"><h3>{esc(title(r["report"]))}</h3>'
        f"{timeline_svg(timeline.of_run(Path(r['report']['evidence_dir'])), 540, 300)}</div>"
        for r in rows
    )
    cluster_map = heatmap.heatmap(rows)
    return page(
        "msglab compare",
        f"""<h1>msglab: what each transport delivers when things break</h1>
<p>{len(rows)} runs and {len(probes(summary))} probes on real servers in {summary["seconds"]} s ({
            "quick" if summary["quick"] else "full"
        } matrix). Broker kills are SIGKILLs of the server process: the OS page cache
survives them, so they are not power cuts; <code>power-cut</code> rows drop every write the
server had not fsynced. <em>Lost from storage</em>: confirmed messages the broker (or the
database, or the folder) no longer held after a durability fault, read by a group that read
nothing before. <em>Publish/s without the fault</em>: what the row's settings cost, the same
settings publishing as fast as they can with no fault.{PHANTOM if phantoms else ""} Raw evidence
of each run is in its folder.</p>{cluster_map}
<table id="matrix"><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>{"".join(body)}</table>
{skipped(summary)}
{probe_table(probes(summary))}
{scaling(probes(summary))}
<h2>Lost and duplicate effects</h2>{bars(rows)}
<h2>Latency (send to first delivery)</h2>{latency(rows)}
<h2>Timelines</h2><p>{EXPLAIN}</p>{cards}""",
        heatmap.STYLE if cluster_map else "",
    )


def _dash(value: Any) -> Any:
    return "-" if value is None else value


def skipped(summary: dict[str, Any]) -> str:
    """The rows left out because the servers the user named cannot take them, with why."""
    items = "".join(
        f"<li>{esc(s['row'])}: {esc(s['reason'])}</li>" for s in summary.get("skipped", [])
    )
    return f'<h2>Not run on these servers</h2><ul id="skipped">{items}</ul>' if items else ""


def run_page(folder: Path) -> str:
    """The report of the run folder ``folder`` (its ``report.json`` and evidence files): the
    timeline, large, the counts and the faults."""
    r = json.loads((folder / "report.json").read_text())
    counts = "".join(
        f'<tr><td>{esc(text)}</td><td class="n{" broken" if key in ALARMING and r[key] else ""}">'
        f"{r[key]}</td></tr>"
        for key, text in MEASURES
        if shown(key, r.get(key), r.get("pattern", "direct"))
    )
    lat = r["latency_ms"]
    counts += (
        f'<tr><td>latency ms p50 / p95 / p99 / max</td><td class="n">{lat["p50"]:.1f} / '
        f"{lat['p95']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f}</td></tr>"
    )
    t = timeline.of_run(folder)
    faults = "".join(
        f"<li>{f['ts'] - t.start:.2f} s: {esc(f['action'])} {esc(f.get('target', ''))} "
        f"({esc(f.get('fault', ''))}){esc(', ' + f['detail']) if f.get('detail') else ''}</li>"
        for f in sorted(r["faults"], key=lambda f: f["ts"])
    )
    verdict = "kept" if r["verdict"] == "kept" else "broken: a finding"
    return page(
        f"msglab run {r['run_id']}",
        f"""<h1>{esc(title(r))}</h1>
<p>Run {esc(r["run_id"])}: the promise of {esc(r["profile"])} ({esc(r["promise"])}) was
<span class="{esc(r["verdict"])}">{verdict}</span>. {esc(r.get("simulated") or "")}</p>
{timeline_svg(t, 960, 440)}
<p>{EXPLAIN}</p>
<table id="counts"><tr><th>measure</th><th>value</th></tr>{counts}</table>
<h2>Faults (seconds since the first send)</h2><ul>{faults or "<li>none</li>"}</ul>
<p>Raw evidence: {esc(folder.resolve())} (format: docs/evidence.md).</p>""",
    )


def title(report: dict[str, Any]) -> str:
    """A run as headings name it: transport, profile and fault."""
    return f"{transport_label(report)} {report['profile']}, {fault_label(report)}"


def timeline_svg(t: timeline.Timeline, width: int, height: int) -> str:
    """The chart of a run's timeline, or a line saying there is nothing to draw."""
    return chart(t, width, height) if t.curves["sent"] else "<p>no sends recorded</p>"


def page(name: str, body: str, css: str = "") -> str:
    """A whole page titled ``name``: ``body``, styled by ``STYLE`` and ``css``."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(name)}</title>
<style>{STYLE}{css}</style></head><body>
{body}
</body></html>
"""


REPEAT_COLUMNS = (  # the runs table of a repetition's page: report key, header
    ("sent", "sent"),
    ("confirmed", "confirmed"),
    ("delivered", "delivered"),
    ("lost", "lost"),
    ("lost_from_storage", "lost from storage"),
    ("unconfirmed_lost", "unconfirmed lost"),
    ("duplicate_deliveries", "dup. deliveries"),
    ("duplicate_effects", "dup. effects"),
    ("reordered", "reordered"),
)


def repeat_page(doc: dict[str, Any], findings: list[str]) -> str:
    """The page of a repetition (``repeat.json``'s ``doc``; ``findings``: its sentences, as
    ``lab.repeat.findings`` writes them): the findings, the lost messages of each run as bars,
    a table of the runs (each linking its own report.html), the spread of every count, and the
    run folders left out."""
    runs, s = doc["runs"], doc["summary"]
    measured = s["counts"].get("lost_from_storage") is not None
    columns = [(k, h) for k, h in REPEAT_COLUMNS if k != "lost_from_storage" or measured]
    head = "".join(f"<th>{h}</th>" for h in ("#", "run", *(h for _, h in columns), "s", "verdict"))
    body = "".join(
        f'<tr><td class="n">{i}</td>'
        f'<td class="id"><a href="{esc(r["folder"])}/report.html">{esc(r["run_id"])}</a></td>'
        + "".join(_count_cell(k, r[k]) for k, _ in columns)
        + f'<td class="n">{esc(r["seconds"])}</td>'
        f'<td class="{esc(r["verdict"])}">{esc(r["verdict"])}</td></tr>'
        for i, r in enumerate(runs, 1)
    )
    if runs:
        total = {k: (stats or {}).get("total") for k, stats in s["counts"].items()}
        body += (
            '<tr class="all"><td></td><td>all</td>'
            + "".join(_count_cell(k, total[k]) for k, _ in columns)
            + f'<td class="n">{s["seconds"]}</td><td>{s["runs_broken"]} broken</td></tr>'
        )
    spread = "".join(
        f"<tr><td>{esc(text)}</td>"
        + "".join(f'<td class="n">{esc(stats[k])}</td>' for k in SPREAD)
        + "</tr>"
        for key, text in MEASURES
        if (stats := s["counts"].get(key)) is not None
        and shown(key, stats["total"], doc.get("pattern", "direct"))
    )
    left_out = "".join(
        f"<li>{esc(x['folder'])}: {esc(x['reason'])}</li>" for x in doc.get("left_out", [])
    )
    stopped = (
        f" Interrupted after {s['runs']} of the {doc['requested']} runs asked for."
        if doc["interrupted"]
        else ""
    )
    return page(
        f"msglab run --repeat {doc['requested']}",
        f"""<h1>{esc(title(doc))}: {s["runs"]} runs</h1>
<p>The same scenario, {doc["requested"]} runs asked for ({esc(doc["repeat_id"])}), each a
fresh run in a folder of its own; the promise of {esc(doc["profile"])}:
{esc(doc["promise"])}.{stopped}</p>
<ul id="findings">{"".join(f"<li>{esc(line)}</li>" for line in findings)}</ul>
<h2>Lost per run</h2>{repeat_bars(runs, measured)}
<table id="runs"><tr>{head}</tr>{body}</table>
<h2>Each count over the runs</h2>
<table id="spread"><tr><th>count</th>{"".join(f"<th>{h}</th>" for h in SPREAD.values())}</tr>
{spread}
</table>
{f'<h2>Left out</h2><ul id="left-out">{left_out}</ul>' if left_out else ""}
<p class="note">Data: repeat.json beside this page; its runs and summary are recomputed from
each run folder's report.json (format: docs/evidence.md).</p>""",
    )


def _count_cell(key: str, value: Any) -> str:
    """A count in a table, red when it is one of the ``ALARMING`` and not 0."""
    return f'<td class="n{" broken" if key in ALARMING and value else ""}">{esc(value)}</td>'


SPREAD = {"total": "total", "in_runs": "runs > 0", "min": "min", "median": "median", "max": "max"}
"""The columns of a repetition's counts (key of ``repeat.json``'s summary, header): the sum over
the runs, the runs where it is > 0, and its min / median / max."""

BAR_W, PLOT_H = 14, 180  # px: one bar, the plot's height


def repeat_bars(runs: list[dict[str, Any]], storage: bool) -> str:
    """Vertical bars, one group per run (numbered from 1): lost, and lost from storage when the
    runs measured it. Marks a test can find: ``rect.bar`` with ``data-run``, ``data-count`` and
    ``data-value``; ``g.y-tick``, a grid ``line`` at its value and a ``text`` with the value."""
    keys = ["lost", *(["lost_from_storage"] if storage else [])]
    peak = max([1, *(r[k] or 0 for r in runs for k in keys)])
    y_step = step(peak, 4, whole=True)
    y_top = math.ceil(peak / y_step) * y_step
    left, top = 64, 30
    group = max(BAR_W * len(keys) + 12, 400 / max(1, len(runs)))  # the plot: >= 400 px wide
    right, bottom = left + group * max(1, len(runs)), top + PLOT_H
    width, height = right + 20, bottom + 44

    def y(value: float) -> float:
        return bottom - value / y_top * PLOT_H

    colours = {"lost": LOST, "lost_from_storage": COLORS["lost_from_storage"]}
    parts = [
        f'<svg class="repeat-chart" width="{width}" height="{height}" role="img" '
        f'aria-label="lost per run: {esc(", ".join(str(r["lost"]) for r in runs))}">'
    ]
    for i in range(round(y_top / y_step) + 1):
        v = y(i * y_step)
        parts.append(
            f'<g class="y-tick"><line x1="{left - 4}" x2="{right}" y1="{v:.1f}" y2="{v:.1f}" '
            f'stroke="#e2e2e2"/><text x="{left - 7}" y="{v + 4:.1f}" text-anchor="end">'
            f"{label(i * y_step, y_top)}</text></g>"
        )
    for i, r in enumerate(runs, 1):
        at = left + (i - 1) * group + (group - BAR_W * len(keys)) / 2
        for j, key in enumerate(keys):
            value, x = r[key] or 0, at + j * BAR_W
            parts.append(
                f'<rect class="bar" data-run="{i}" data-count="{key}" data-value="{value}" '
                f'x="{x:.1f}" y="{y(value):.1f}" width="{BAR_W}" '
                f'height="{bottom - y(value):.1f}" fill="{colours[key]}">'
                f"<title>run {i} {esc(r['run_id'])}: {key} {value}</title></rect>"
            )
            if value:
                parts.append(
                    f'<text class="value" x="{x + BAR_W / 2:.1f}" y="{y(value) - 3:.1f}" '
                    f'text-anchor="middle">{value:,}</text>'
                )
        parts.append(
            f'<text class="run-number" x="{left + (i - 0.5) * group:.1f}" y="{bottom + 15}" '
            f'text-anchor="middle">{i}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#999"/>'
        f'<text x="{(left + right) / 2:.0f}" y="{height - 8}" text-anchor="middle">run</text>'
        f'<text transform="translate(14 {(top + bottom) / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">messages</text>'
    )
    legend = [("lost", "lost (confirmed, never delivered)")]
    if storage:
        legend.append(("lost_from_storage", "lost from storage"))
    at = float(left)
    for key, text in legend:
        parts.append(
            f'<rect x="{at:.0f}" y="8" width="12" height="12" fill="{colours[key]}"/>'
            f'<text x="{at + 16:.0f}" y="18">{text}</text>'
        )
        at += 40 + 6.5 * len(text)
    parts.append("</svg>")
    return "".join(parts)
