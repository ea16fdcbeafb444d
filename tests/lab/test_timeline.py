"""A run's timeline from hand-made evidence: the curves end at the checker's counts, the
downsampled curves stay true to the evidence, fault records pair into windows."""

from __future__ import annotations

import json
import random
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Any

from pytest import approx

from msglab.lab.checker import check
from msglab.lab.evidence import DELIVERIES, EFFECTS, SENDS, read
from msglab.lab.timeline import CURVES, Timeline, of_run, windows


def write(folder: Path, name: str, records: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def attempt(mid: str, seq: int, outcome: str, t: float, tried: int = 1) -> list[dict[str, Any]]:
    base = {"sent_ts": t, "producer": "p0", "seq": seq, "id": mid, "key": "k", "try": tried}
    done = [] if outcome == "in-flight" else [{**base, "outcome": outcome, "ts": t + 0.2}]
    return [{**base, "outcome": "sending"}, *done]


def test_the_curves_end_at_the_checkers_counts(tmp_path: Path) -> None:
    sends = (
        attempt("a", 0, "ok", 10.0)
        + attempt("b", 1, "ok", 10.5)  # confirmed, never delivered: lost
        + attempt("c", 2, "in-flight", 11.0)  # unknown, yet delivered: recovered
        + attempt("d", 3, "fail", 11.5)
        + attempt("d", 3, "ok", 12.5, tried=2)  # retried: confirmed at 12.7
        + attempt("e", 4, "unknown", 13.0)  # never delivered: unconfirmed lost
    )
    deliveries = [
        {"ts": t, "consumer": "c0", "id": mid}
        for mid, t in (("a", 11.0), ("a", 12.0), ("c", 13.0), ("d", 14.0), ("zz", 14.5))
    ]
    effects = [{"id": "a", "ts": 11.1}, {"id": "a", "ts": 12.1}, {"id": "d", "ts": 14.1}]
    for name, records in (
        ("sends-p0", sends),
        ("deliveries-c0", deliveries),
        ("effects-db", effects),
        ("faults-orchestrator", [{"ts": 10.7, "action": "kill", "target": "kafka"}]),
    ):
        write(tmp_path, name, records)
    counts = check(read(tmp_path, SENDS), read(tmp_path, DELIVERIES), read(tmp_path, EFFECTS), None)
    t = of_run(tmp_path)
    assert (t.final("sent"), t.final("confirmed"), t.final("delivered")) == (
        counts.sent,
        counts.confirmed,
        counts.delivered,
    )
    assert t.final("effects") == len({e["id"] for e in effects})
    assert t.lost == counts.lost == 1
    assert t.curves["confirmed"] == approx(
        [0.2, 0.7, 2.7]
    )  # first ok line of a, b, d; x = since 10.0
    assert t.curves["delivered"] == approx([1.0, 3.0, 4.0])  # zz was never sent: not drawn
    assert t.windows == [windows([{"ts": 10.7, "action": "kill", "target": "kafka"}], 10.0)[0]]
    assert t.span == approx(4.1) and t.start == 10.0  # the last effect; the first send


def test_a_curve_of_100k_messages_is_at_most_400_corners_and_true_to_the_evidence() -> None:
    rng = random.Random(7)
    moments = sorted(rng.uniform(0, 30) ** 1.5 / 10 for _ in range(100_000))
    delivered = sorted(rng.sample(moments, 60_000))
    t = Timeline(
        curves={"sent": moments, "confirmed": moments, "delivered": delivered, "effects": []},
        windows=[],
        lost=40_000,
    )
    for curve in CURVES:
        corners = t.corners(curve)
        assert len(corners) <= 400
        assert corners[0] == (0.0, 0) and corners[-1] == (t.span, t.final(curve))
        assert corners == sorted(corners)  # time and count only ever go up
        for at, count in corners:  # the drawn count at a corner is one the curve has there
            before, after = bisect_left(t.curves[curve], at), bisect_right(t.curves[curve], at)
            assert before <= count <= after, (curve, at, count, before, after)


def test_fault_records_pair_into_windows_by_target() -> None:
    records = [
        {"ts": 5.0, "action": "restart", "target": "kafka"},
        {"ts": 1.0, "action": "kill", "target": "kafka"},
        {"ts": 2.0, "action": "kill", "target": "c0"},  # a worker killed itself: an instant
        {"ts": 0.5, "action": "stop", "target": "consumers"},  # no-subscriber
        {"ts": 6.0, "action": "start", "target": "consumers"},
        {"ts": 7.0, "action": "add-toxic", "target": "redis"},
        {"ts": 8.0, "action": "remove-toxic", "target": "redis"},
        {"ts": 9.0, "action": "kill", "target": "kafka"},
        {"ts": 9.5, "action": "restart", "target": "kafka"},
        {"ts": 12.0, "action": "start", "target": "r0"},  # a second group: no fault
    ]
    found = [(w.begin, w.end, w.label) for w in windows(records, start=1.0)]
    assert found == [
        (-0.5, 5.0, "stop consumers … start"),
        (0.0, 4.0, "kill kafka … restart"),
        (1.0, None, "kill c0"),
        (6.0, 7.0, "add-toxic redis … remove-toxic"),
        (8.0, 8.5, "kill kafka … restart"),
    ]
