"""The picture of a run's timeline (``msglab.lab.timeline``) as inline SVG, no scripts.

x: seconds since the run's first send, 0 to the last event; y: distinct messages, 0 to a round
number at or above the largest count. One step curve each for sent, confirmed, delivered and
effects (at most ``MAX_POINTS`` corners, the final count exact), each ending at the right edge
with its final count written beside it; fault windows shaded (an instant fault is a dashed
line); the final gap between confirmed and delivered, the lost messages, bracketed and
labelled ``lost N`` when N > 0, and likewise the gap between sent and confirmed.

Marks a test (or a reader of the source) can find: ``polyline.curve`` with ``data-curve``;
``g.x-tick`` and ``g.y-tick``, each a grid ``line`` at its value and a ``text`` with the value;
``rect.fault-window``; ``line.fault-instant``; ``text.lost`` and ``text.unconfirmed``.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from msglab.lab.timeline import CURVES, MAX_POINTS, Timeline

STYLES = {  # curve -> (colour, stroke width, dash); drawn in CURVES order, later on top
    "sent": ("#9FBEDF", 7.0, ""),
    "confirmed": ("#1F4E8C", 2.0, ""),
    "delivered": ("#F28E1C", 3.0, ""),
    "effects": ("#2E7D32", 1.5, "5 4"),
}
TEXT = {"sent": "#3F6E9E", "confirmed": "#1F4E8C", "delivered": "#B85E00", "effects": "#2E7D32"}
FAULT_FILL = "#FFD6D6"
FAULT_LINE = "#C62828"
LOST = "#D62728"
UNCONFIRMED = "#666666"
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 34, 46  # margins around the plot, px
LINE = 14  # px between lines of text


def step(top: float, count: int, whole: bool) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about ``count`` ticks from 0
    to ``top``; at least 1 when ``whole`` (counts of messages)."""
    raw = max(top, 1e-9) / count
    power = 10.0 ** math.floor(math.log10(raw))
    found = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))
    return max(found, 1.0) if whole else found


def label(value: float, top: float) -> str:
    """A tick value as a reader writes it, short, in the unit of its axis (which ends at
    ``top``): 1.5M / 40k / 5k / 5,000 / 2.5 / 0.2."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if top >= 10 * size and value:
            return f"{round(value / size, 6):g}{suffix}"
    return f"{value:,.0f}" if value == round(value) else f"{round(value, 6):g}"


@dataclass(frozen=True)
class Frame:
    """The plot's box in px, and the values at its right and top edges."""

    left: float
    right: float
    top: float
    bottom: float
    span: float  # seconds at the right edge
    y_top: float  # messages at the top edge

    def x(self, t: float) -> float:
        return self.left + min(max(t, 0.0), self.span) / self.span * (self.right - self.left)

    def y(self, count: float) -> float:
        return self.bottom - count / self.y_top * (self.bottom - self.top)


def chart(timeline: Timeline, width: int = 900, height: int = 380) -> str:
    """The SVG of ``timeline``, ``width`` x ``height`` px."""
    finals = {c: timeline.final(c) for c in CURVES}
    y_step = step(max(1, *finals.values()), 5, whole=True)
    f = Frame(
        left=LEFT,
        right=width - RIGHT,
        top=TOP,
        bottom=height - BOTTOM,
        span=timeline.span,
        y_top=math.ceil(max(1, *finals.values()) / y_step) * y_step,
    )
    x_step = step(f.span, 8 if width >= 700 else 5, whole=False)
    summary = ", ".join(f"{c} {finals[c]}" for c in CURVES) + f", lost {timeline.lost}"
    parts = [
        f'<svg class="timeline" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="distinct messages over time: {summary}">',
        f'<rect x="{f.left}" y="{f.top}" width="{f.right - f.left}" '
        f'height="{f.bottom - f.top}" fill="#fff" stroke="#999"/>',
    ]
    parts += [_fault(f, w.begin, w.end, w.label) for w in timeline.windows]
    for i in range(round(f.y_top / y_step) + 1):
        v = f.y(i * y_step)
        parts.append(
            f'<g class="y-tick"><line x1="{f.left - 4}" x2="{f.right}" y1="{v:.1f}" '
            f'y2="{v:.1f}" stroke="#e2e2e2"/><text x="{f.left - 7}" y="{v + 4:.1f}" '
            f'text-anchor="end">{label(i * y_step, f.y_top)}</text></g>'
        )
    for i in range(int(f.span / x_step * (1 + 1e-9)) + 1):
        v = f.x(i * x_step)
        parts.append(
            f'<g class="x-tick"><line x1="{v:.1f}" x2="{v:.1f}" y1="{f.top}" '
            f'y2="{f.bottom + 4}" stroke="#e2e2e2"/><text x="{v:.1f}" y="{f.bottom + 17}" '
            f'text-anchor="middle">{label(i * x_step, f.span)}</text></g>'
        )
    parts.append(
        f'<text x="{(f.left + f.right) / 2:.0f}" y="{height - 8}" text-anchor="middle">'
        f"seconds since the first send</text>"
        f'<text transform="translate(14 {(f.top + f.bottom) / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">messages (distinct)</text>'
    )
    for c in CURVES:
        colour, stroke, dash = STYLES[c]
        points = " ".join(f"{f.x(t):.1f},{f.y(n):.1f}" for t, n in timeline.corners(c, MAX_POINTS))
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline class="curve" data-curve="{c}" fill="none" stroke="{colour}" '
            f'stroke-width="{stroke}" stroke-linejoin="round"{dashes} points="{points}">'
            f"<title>{c}: {finals[c]}</title></polyline>"
        )
    parts += _margin(f, timeline)
    parts.append(_legend(timeline, 24))
    parts.append("</svg>")
    return "".join(parts)


HALO = 'paint-order="stroke" stroke="#fff" stroke-width="3"'  # text readable over lines


def _fault(f: Frame, begin: float, end: float | None, text: str) -> str:
    """A fault window (shaded) or an instant (a dashed line), its label at the top."""
    when = f"{begin:.2f} s" + (f" to {end:.2f} s" if end is not None else "")
    title = f"<title>{html.escape(text)}: {when}</title>"
    if f.x(begin) < f.left + (f.right - f.left) * 0.6:
        anchor, at = "start", f.x(begin) + 4
    else:  # the caption would run out of the plot: it ends where the fault ends
        anchor, at = "end", f.x(end if end is not None else begin) - 4
    caption = (
        f'<text x="{at:.1f}" y="{f.top + 14}" text-anchor="{anchor}" fill="{FAULT_LINE}" '
        f"{HALO}>{html.escape(text)}</text>"
    )
    if end is None:
        return (
            f'<line class="fault-instant" x1="{f.x(begin):.1f}" x2="{f.x(begin):.1f}" '
            f'y1="{f.top}" y2="{f.bottom}" stroke="{FAULT_LINE}" stroke-width="1.5" '
            f'stroke-dasharray="4 3">{title}</line>{caption}'
        )
    return (
        f'<rect class="fault-window" x="{f.x(begin):.1f}" y="{f.top}" '
        f'width="{max(2.0, f.x(end) - f.x(begin)):.1f}" height="{f.bottom - f.top}" '
        f'fill="{FAULT_FILL}">{title}</rect>{caption}'
    )


Block = tuple[float, str, list[str]]  # a text right of the plot: wanted height, class, lines


def _margin(f: Frame, timeline: Timeline) -> list[str]:
    """Right of the plot, top to bottom: each final count with the names of the curves that
    end there, and between them the gaps (sent but never confirmed; confirmed but never
    delivered: lost) when not zero, each bracketed at the plot's edge. Every text stays as near
    its height as it can without overlapping another."""
    brackets, gaps = _gaps(f, timeline)
    return brackets + _stack(f, sorted(_finals(f, timeline) + gaps, key=lambda b: b[0]))


def _finals(f: Frame, timeline: Timeline) -> list[Block]:
    groups: dict[int, list[str]] = {}
    for c in CURVES:
        groups.setdefault(timeline.final(c), []).append(c)
    blocks = []
    for n, names in groups.items():
        rows: list[list[str]] = [[]]
        for c in names:  # wrapped to the margin's width
            if rows[-1] and len(", ".join([*rows[-1], c])) > 20:
                rows.append([])
            rows[-1].append(c)
        words = [", ".join(f'<tspan fill="{TEXT[c]}">{c}</tspan>' for c in row) for row in rows]
        blocks.append((f.y(n), "final", [f'<tspan font-weight="bold">{n:,}</tspan>', *words]))
    return blocks


def _gaps(f: Frame, timeline: Timeline) -> tuple[list[str], list[Block]]:
    sent, confirmed = timeline.final("sent"), timeline.final("confirmed")
    brackets, blocks = [], []
    for cls, word, colour, above, gap in (
        ("unconfirmed", "not confirmed", UNCONFIRMED, sent, sent - confirmed),
        ("lost", "lost", LOST, confirmed, timeline.lost),
    ):
        if gap <= 0:
            continue
        y1, y2, at = f.y(above), f.y(above - gap), f.right + 5
        brackets.append(
            f'<path class="{cls}-gap" d="M{at - 5} {y1:.1f}H{at}V{y2:.1f}H{at - 5}" '
            f'fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        text = f"{word} {gap:,}"
        words = [text] if len(text) <= 18 else [word, f"{gap:,}"]
        lines = [f'<tspan fill="{colour}" font-weight="bold">{w}</tspan>' for w in words]
        blocks.append(((y1 + y2) / 2 - LINE * (len(lines) - 1) / 2, cls, lines))
    return brackets, blocks


def _stack(f: Frame, blocks: list[Block]) -> list[str]:
    """``blocks`` (sorted by height) as texts, each pushed below the one above it if they
    would overlap, all lifted together if the last one would fall below the plot."""
    placed: list[float] = []
    for i, (wanted, _cls, _lines) in enumerate(blocks):
        below = placed[-1] + LINE * len(blocks[i - 1][2]) if placed else wanted
        placed.append(max(wanted, below))
    lift = max(0.0, placed[-1] + LINE * (len(blocks[-1][2]) - 1) - (f.bottom + 8))
    texts, x = [], f.right + 12
    for at, (_wanted, cls, lines) in zip(placed, blocks, strict=True):
        rest = "".join(f'<tspan x="{x}" dy="{LINE}">{ln}</tspan>' for ln in lines[1:])
        texts.append(f'<text class="{cls}" x="{x}" y="{at - lift + 4:.1f}">{lines[0]}{rest}</text>')
    return texts


def _legend(timeline: Timeline, left: int) -> str:
    """One line above the plot: a sample of each curve, the fault window, an instant fault."""
    parts, at = [], float(left)
    for c in CURVES:
        colour, stroke, dash = STYLES[c]
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line x1="{at:.0f}" x2="{at + 20:.0f}" y1="14" y2="14" stroke="{colour}" '
            f'stroke-width="{stroke}"{dashes}/><text x="{at + 24:.0f}" y="18">{c}</text>'
        )
        at += 34 + 6.5 * len(c)
    parts.append(
        f'<rect x="{at:.0f}" y="8" width="16" height="12" fill="{FAULT_FILL}"/>'
        f'<text x="{at + 21:.0f}" y="18">fault</text>'
    )
    if any(w.end is None for w in timeline.windows):
        at += 56
        parts.append(
            f'<line x1="{at:.0f}" x2="{at:.0f}" y1="6" y2="22" stroke="{FAULT_LINE}" '
            f'stroke-width="1.5" stroke-dasharray="4 3"/><text x="{at + 5:.0f}" y="18">'
            f"instant fault</text>"
        )
    return f'<g class="legend">{"".join(parts)}</g>'
