"""The checker on hand-made evidence: every count, torn lines, clock edge cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from msglab.lab.checker import check, final_outcomes, percentile, promise, shown
from msglab.lab.evidence import ReadStats, read


def send(
    mid: str,
    seq: int,
    outcome: str,
    t: float = 0.0,
    key: str = "k0",
    attempt: int = 1,
    producer: str = "p0",
) -> list[dict[str, Any]]:
    base = {"sent_ts": t, "producer": producer, "seq": seq, "id": mid, "key": key, "try": attempt}
    return [{**base, "outcome": "sending"}, {**base, "outcome": outcome}]


def delivery(mid: str, ts: float, redelivered: bool = False) -> dict[str, Any]:
    return {"ts": ts, "consumer": "c0", "id": mid, "redelivered": redelivered}


def test_every_count() -> None:
    sends = (
        send("a", 0, "ok")
        + send("b", 1, "ok")
        + send("c", 2, "unknown")
        + send("d", 3, "fail")
        + send("e", 4, "unknown")
        + send("f", 5, "fail")
        + send("f", 5, "ok", attempt=2)
    )
    deliveries = [
        delivery("a", 1.0),
        delivery("c", 1.1),
        delivery("f", 1.2),
        delivery("a", 2.0, redelivered=True),
        delivery("zz", 2.5),
    ]
    effects = [{"id": "a"}, {"id": "a"}, {"id": "c"}, {"id": "f"}]
    c = check(sends, deliveries, effects)
    assert (c.sent, c.confirmed, c.failed, c.unknown) == (6, 3, 1, 2)  # f: retried, then ok
    assert c.delivered == 3 and c.unexpected == 1
    assert c.lost == 1 and c.lost_ids == ["b"]
    assert c.unconfirmed_lost == 2  # d (fail) and e (unknown) never arrived
    assert c.recovered == 1  # c: unknown, yet delivered
    assert c.duplicate_deliveries == 1 and c.duplicate_deliveries_flagged == 1
    assert c.duplicate_effects == 1
    assert c.verdict("at-least-once") == "broken" and c.verdict("at-most-once") == "broken"
    assert c.delivered_by == {"c0": 5} and c.replayed is None  # not a replay run
    replays = [  # zz was never sent; b was read twice, first at 3.0
        {"id": "a", "ts": 2.0},
        {"id": "b", "ts": 4.0},
        {"id": "b", "ts": 3.0},
        {"id": "zz", "ts": 1.0},
    ]
    second = check(sends, deliveries, effects, replays)
    assert second.replayed == 2
    assert second.second_group_latency_ms == {
        "p50": 2000.0,
        "p95": 3000.0,
        "p99": 3000.0,
        "max": 3000.0,
    }
    assert c.second_group_latency_ms is None


def test_an_attempt_without_outcome_was_in_flight_so_unknown() -> None:
    killed = [send("x", 0, "ok")[0]]  # the producer died between publish and its outcome line
    outcome, _ = final_outcomes(killed + send("y", 1, "fail") + [send("y", 1, "ok", attempt=2)[0]])
    assert outcome == {"x": "unknown", "y": "unknown"}


def test_reordering_counts_first_deliveries_per_producer_and_key() -> None:
    sends = send("a", 0, "ok", key="k") + send("b", 1, "ok", key="k") + send("c", 2, "ok", key="k")
    sends += send("q", 0, "ok", key="other")
    deliveries = [
        delivery("b", 1.0),
        delivery("a", 2.0),
        delivery("c", 3.0),
        delivery("q", 0.5),
        delivery("a", 4.0),
    ]  # the duplicate of a does not count again
    assert check(sends, deliveries, []).reordered == 1


def test_latency_percentiles_and_clock_steps() -> None:
    sends = [line for i in range(100) for line in send(f"m{i}", i, "ok", t=10.0)]
    deliveries = [delivery(f"m{i}", 10.0 + (i + 1) / 1000) for i in range(99)]
    deliveries.append(delivery("m99", 9.5))  # delivered "before" it was sent: a clock step
    c = check(sends, deliveries, [])
    assert c.clock_anomalies == 1
    # 100 latencies: 0 (the clamped step) and 1..99 ms; nearest-rank percentiles
    assert c.latency_ms["p50"] == 49.0 and c.latency_ms["max"] == 99.0
    assert c.latency_ms["p99"] == 98.0
    assert percentile([], 99) == 0.0


def test_nothing_delivered_is_all_lost_without_errors() -> None:
    c = check(send("a", 0, "ok"), [], [])
    assert c.lost == 1 and c.delivered == 0 and c.throughput_per_s == 0.0
    assert c.verdict("at-most-once") == "kept"


def test_torn_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in send("a", 0, "ok") + send("b", 1, "ok")]
    (tmp_path / "sends-p0.jsonl").write_text("\n".join(lines) + "\n" + lines[0][:17])
    (tmp_path / "sends-p1.jsonl").write_text("")
    stats = ReadStats()
    records = list(read(tmp_path, "sends", stats))
    assert len(records) == 4 and stats.torn_lines == 1 and stats.files == 2
    assert check(records, [], []).confirmed == 2


def test_a_batch_recorded_at_one_time_is_in_line_order_not_reordered() -> None:
    sends = [
        {"sent_ts": 1.0, "producer": "p0", "seq": i, "id": f"m{i}", "key": "k", "outcome": "ok"}
        for i in range(50)
    ]
    deliveries = [{"ts": 2.0, "consumer": "c0", "id": f"m{i}"} for i in range(50)]
    assert check(sends, deliveries, []).reordered == 0
    swapped = [deliveries[1], deliveries[0], *deliveries[2:]]
    assert check(sends, swapped, []).reordered == 1


def test_unavailable_is_the_longest_time_without_a_confirmed_publish() -> None:
    """Sends from t=10: confirmations at 10.1, 10.2, then none until 13.7 (a failover), then
    13.8: the producers had nothing confirmed for 3.5 s."""
    sends = []
    for i, (sent, confirmed) in enumerate([(10.0, 10.1), (10.1, 10.2), (10.2, 13.7), (13.7, 13.8)]):
        base = {"sent_ts": sent, "producer": "p0", "seq": i, "id": f"m{i}", "key": "k", "try": 1}
        sends += [{**base, "outcome": "sending"}, {**base, "outcome": "ok", "ts": confirmed}]
    assert check(sends, [], []).unavailable_s == 3.5
    assert check(sends[:4], [], []).unavailable_s == 0.1
    assert check([], [], []).unavailable_s == 0.0


def test_a_delivered_message_without_its_business_row_is_a_phantom() -> None:
    # publish-then-commit, killed between the two: b and c were published (delivered), their
    # business transaction never committed (their sends end in flight: unknown)
    sends = [*send("a", 0, "ok"), send("b", 1, "ok")[0], send("c", 2, "ok")[0]]
    deliveries = [delivery("a", 1.0), delivery("b", 1.1), delivery("c", 1.2), delivery("c", 1.3)]
    effects = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    c = check(sends, deliveries, effects, orders=[{"id": "a"}, {"id": "zz"}])
    assert c.phantom == 2 and c.lost == 0  # b and c (c once, though delivered twice)
    assert c.recovered == 2  # unknown, delivered: the sends alone cannot tell a phantom
    assert c.verdict("at-least-once") == "broken"
    assert c.verdict("effectively-once") == "broken"
    assert c.verdict("at-most-once") == "kept"  # no message handled twice
    committed = check(sends, deliveries, effects, orders=[{"id": m} for m in "abc"])
    assert committed.phantom == 0 and committed.verdict("at-least-once") == "kept"
    # a run without business transactions (direct) does not measure it
    assert check(sends, deliveries, effects).phantom is None
    assert promise("at-least-once", "publish-then-commit") == "lost == 0 and phantom == 0"
    assert promise("at-least-once", "direct") == "lost == 0"  # nothing committed: no phantom


def test_phantom_is_shown_where_its_pattern_makes_them_or_when_not_zero() -> None:
    assert shown("phantom", 0, "publish-then-commit")
    assert not shown("phantom", 0, "dual-write") and shown("phantom", 3, "dual-write")
    assert not shown("phantom", None, "direct") and not shown("lost_from_storage", None, "x")
    assert shown("lost", 0, "direct")
