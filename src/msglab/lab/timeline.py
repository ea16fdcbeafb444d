"""A run's timeline: how many distinct messages were sent, confirmed, delivered and applied by
each moment, and when the faults struck, read from the raw evidence of its folder.

Times are seconds since the run's first send (the earliest ``sent_ts``). Each curve is the
sorted list of the moments its count went up by one, so its count at ``t`` is the number of
moments ``<= t`` and its final value is the length of the list:

* ``sent``: a message's first send attempt (its earliest ``sent_ts``): final = the checker's
  ``sent``;
* ``confirmed``: its first ``ok`` outcome line: final = ``confirmed``;
* ``delivered``: its first delivery, sent messages only: final = ``delivered``;
* ``effects``: its first effect row: final = the distinct messages with an effect.

``lost`` is the checker's: confirmed, never delivered. Fault windows: a fault record that
takes something down (``kill``, ``stop``, ``add-toxic``) is closed by the next record of the
same target that brings it back (``restart``, ``start``, ``remove-toxic``); one that nothing
closes (a worker that killed itself) is an instant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msglab.lab.evidence import DELIVERIES, EFFECTS, FAULTS, SENDS, read

CURVES = ("sent", "confirmed", "delivered", "effects")
FAULT_BEGINS = ("kill", "stop", "add-toxic", "cut")  # fault records' actions opening a window
FAULT_ENDS = ("restart", "start", "remove-toxic", "heal")  # ... and those that close it
MAX_POINTS = 400  # corners per drawn curve, whatever the number of messages


@dataclass(frozen=True)
class Window:
    """A fault, in seconds since the first send: ``end`` is None for an instant."""

    begin: float
    end: float | None
    label: str


@dataclass(frozen=True)
class Timeline:
    curves: dict[str, list[float]]  # CURVES -> sorted moments the count went up by one
    windows: list[Window]
    lost: int
    start: float = 0.0  # the first send, epoch seconds: x = 0

    def final(self, curve: str) -> int:
        return len(self.curves[curve])

    @property
    def span(self) -> float:
        """Seconds from the first send to the last event or fault (at least 1 ms)."""
        moments = [c[-1] for c in self.curves.values() if c]
        moments += [w.end if w.end is not None else w.begin for w in self.windows]
        return max([1e-3, *moments])

    def corners(self, curve: str, max_points: int = MAX_POINTS) -> list[tuple[float, int]]:
        """The curve as at most ``max_points`` (seconds, count) corners from (0, 0) to
        (span, final): the span is cut into ``(max_points - 2) // 2`` equal bins, and a bin in
        which the count rose gives two corners, (its first rise, count before) and (its last
        rise, count after). Between bins the count is flat, so the drawing is exact to a bin;
        the final count is exact."""
        moments, span = self.curves[curve], self.span
        bins = max(1, (max_points - 2) // 2)
        points: list[tuple[float, int]] = [(0.0, 0)]
        count, current, first, last = 0, -1, 0.0, 0.0
        for t in moments:
            b = min(bins - 1, max(0, int(t / span * bins)))
            if b != current:
                if current >= 0:
                    points += [(first, points[-1][1]), (last, count)]
                current, first = b, max(0.0, t)
            last = max(0.0, t)
            count += 1
        if current >= 0:
            points += [(first, points[-1][1]), (last, count)]
        points.append((span, count))
        return points


def of_run(folder: Path) -> Timeline:
    """The timeline of the run folder ``folder`` (its sends, deliveries, effects, faults)."""
    first_send: dict[str, float] = {}
    first_ok: dict[str, float] = {}
    for s in read(folder, SENDS):
        mid = s["id"]
        first_send[mid] = min(s["sent_ts"], first_send.get(mid, s["sent_ts"]))
        if s["outcome"] == "ok":
            first_ok[mid] = min(s["ts"], first_ok.get(mid, s["ts"]))
    delivered = _firsts(d for d in read(folder, DELIVERIES) if d["id"] in first_send)
    effects = _firsts(read(folder, EFFECTS))
    start = min(first_send.values(), default=0.0)
    curves = {
        name: sorted(t - start for t in firsts.values())
        for name, firsts in zip(CURVES, (first_send, first_ok, delivered, effects), strict=True)
    }
    return Timeline(
        curves=curves,
        windows=windows(read(folder, FAULTS), start),
        lost=len(first_ok.keys() - delivered.keys()),
        start=start,
    )


def _firsts(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Per message id, the earliest ``ts`` of its records."""
    first: dict[str, float] = {}
    for r in records:
        first[r["id"]] = min(r["ts"], first.get(r["id"], r["ts"]))
    return first


def windows(faults: Iterable[dict[str, Any]], start: float) -> list[Window]:
    """Fault windows from fault records (any order), in seconds since ``start``."""
    records = sorted(faults, key=lambda f: f["ts"])
    closers = [f for f in records if f["action"] in FAULT_ENDS]
    found = []
    for f in (f for f in records if f["action"] in FAULT_BEGINS):
        target = f.get("target", "")
        close = next(
            (c for c in closers if c["ts"] >= f["ts"] and c.get("target", "") == target), None
        )
        label = f"{f['action']} {target}".strip()
        if close is None:
            found.append(Window(f["ts"] - start, None, label))
            continue
        closers.remove(close)
        found.append(Window(f["ts"] - start, close["ts"] - start, f"{label} … {close['action']}"))
    return found
