"""The checker: counts what docs/guarantees.md defines, from the raw evidence alone.

Inputs are the records of a run folder (sends, deliveries, effects); nothing else is trusted.

* A message's send outcome is ``ok`` if any attempt was confirmed, else ``unknown`` if any
  attempt's fate is unknown, else ``fail``.
* lost: ok, never delivered. unconfirmed_lost: fail/unknown, never delivered. recovered:
  unknown, yet delivered. unexpected: delivered, never sent.
* phantom (runs whose send is a business transaction, else None): sent messages delivered
  with no business row (``orders``) after the run: delivered, but the business transaction
  that should carry them never committed (publish-then-commit, killed between the two).
* duplicate_deliveries: deliveries beyond the first of each message.
* duplicate_effects: effect rows beyond the first of each message.
* reordered: per (producer, key), a first delivery whose sequence number is below one already
  delivered, in delivery-time order (equal times: in the order of the consumer's lines).
* latency: first delivery time minus the send time, in ms (a negative value, a clock step
  between processes, counts as 0 and is reported in ``clock_anomalies``).
* throughput_per_s: messages delivered per second, first send to last first delivery;
  publish_per_s: messages confirmed per second, first send to the last outcome recorded.
* unavailable_s: the longest time with no publish confirmed, from the first send to the last
  confirmation (a failover's downtime as the producers saw it).
* delivered_by: delivery lines per consumer. replayed (replay, fanout and request-reply runs,
  else None): distinct sent messages the second group read (created after the run, alongside
  it, or reading the replies); second_group_latency_ms: send to that first read (the round
  trip of a request-reply run), like latency.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PROMISES = {
    "at-most-once": "no duplicate effects",
    "at-least-once": "lost == 0",
    "effectively-once": "lost == 0 and duplicate effects == 0",
    "exactly-once": "every confirmed message once in the output (read_committed, after the run)",
}

CONSISTENT = {
    "at-least-once": "lost == 0 and phantom == 0",
    "effectively-once": "lost == 0, phantom == 0 and duplicate effects == 0",
}
"""The promises where the send is a business transaction (every pattern but direct): no
message out whose business change is not in either."""


def promise(profile: str, pattern: str) -> str:
    """The promise a run of ``profile`` and ``pattern`` is held to (``verdict``)."""
    return CONSISTENT.get(profile, PROMISES[profile]) if pattern != "direct" else PROMISES[profile]


MEASURES = (  # the counts of a run's report as its tables name them: key, label (None: no row)
    ("sent", "sent"),
    ("confirmed", "confirmed"),
    ("failed", "failed"),
    ("unknown", "unknown"),
    ("delivered", "delivered (distinct)"),
    ("lost", "lost (confirmed, never delivered)"),
    ("lost_from_storage", "lost from storage (confirmed, not kept)"),  # durability faults only
    ("lost_from_output", "lost from the output (confirmed, no committed copy)"),  # exactly-once
    ("output_duplicates", "duplicates in the output (copies committed twice)"),  # exactly-once
    ("phantom", "phantom (delivered, its business transaction never committed)"),  # patterns
    ("unconfirmed_lost", "unconfirmed lost"),
    ("recovered", "recovered (unknown, delivered)"),
    ("unexpected", "unexpected"),
    ("duplicate_deliveries", "duplicate deliveries"),
    ("duplicate_effects", "duplicate effects"),
    ("reordered", "reordered"),
    ("throughput_per_s", "throughput /s"),
    ("unavailable_s", "longest time with no publish confirmed (s)"),
)


ALARMING = (
    "lost",
    "lost_from_storage",
    "duplicate_effects",
    "lost_from_output",
    "output_duplicates",
    "phantom",
)
"""The counts tables show in red when they are not 0."""

PHANTOM_PATTERNS = ("publish-then-commit",)
"""The patterns that make phantoms by design (a publish before its commit); under the other
database patterns only a database that drops committed rows can (``shown``)."""


def shown(key: str, value: Any, pattern: str) -> bool:
    """Whether a table shows count ``key`` of a run of ``pattern``: when measured (not None),
    and ``phantom`` only under a pattern that makes phantoms by design or when not 0."""
    if value is None:
        return False
    return key != "phantom" or pattern in PHANTOM_PATTERNS or bool(value)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


@dataclass
class Counts:
    sent: int
    confirmed: int
    failed: int
    unknown: int
    delivered: int
    lost: int
    unconfirmed_lost: int
    recovered: int
    unexpected: int
    duplicate_deliveries: int
    duplicate_deliveries_flagged: int
    duplicate_effects: int
    reordered: int
    latency_ms: dict[str, float]
    throughput_per_s: float
    publish_per_s: float
    clock_anomalies: int
    delivered_by: dict[str, int]
    replayed: int | None
    second_group_latency_ms: dict[str, float] | None
    lost_ids: list[str]
    lost_from_storage: int | None = None
    unavailable_s: float = 0.0
    lost_from_output: int | None = None  # exactly-once: confirmed, not in the output
    output_duplicates: int | None = None  # exactly-once: extra committed copies in the output
    phantom: int | None = None  # database patterns: delivered, no business row committed

    def verdict(self, profile: str) -> str:
        """``kept`` or ``broken``: the promise of ``profile`` (``promise``); a phantom breaks
        at-least-once and effectively-once (a message out whose business change is not), and
        counts as 0 where it is not measured (pattern direct: no business transaction)."""
        consistent = self.lost == 0 and not self.phantom
        kept = {
            "at-most-once": self.duplicate_effects == 0,
            "at-least-once": consistent,
            "effectively-once": consistent and self.duplicate_effects == 0,
            # the output as read once after the run: every message there, once
            "exactly-once": self.lost_from_output == 0 and self.output_duplicates == 0,
        }[profile]
        return "kept" if kept else "broken"


def final_outcomes(
    sends: Iterable[dict[str, Any]],
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Per message id: its final outcome, and its first send record (producer, seq, key, time).

    Each attempt (``try``) has a ``sending`` line and, unless the producer died in between, an
    outcome line; an attempt with no outcome line was in flight: ``unknown``. The message is
    ``ok`` if any attempt was, else ``unknown`` if any attempt was, else ``fail``.
    """
    rank = {"fail": 0, "unknown": 1, "ok": 2}
    attempts: dict[tuple[str, int], str] = {}
    first: dict[str, dict[str, Any]] = {}
    for s in sends:
        mid = s["id"]
        if mid not in first or s["sent_ts"] < first[mid]["sent_ts"]:
            first[mid] = s
        key = (mid, s.get("try", 1))
        if s["outcome"] == "sending":
            attempts.setdefault(key, "unknown")
        else:
            attempts[key] = s["outcome"]
    outcome: dict[str, str] = {}
    for (mid, _try), result in attempts.items():
        if mid not in outcome or rank[result] > rank[outcome[mid]]:
            outcome[mid] = result
    return outcome, first


def lost_either(
    sends: Iterable[dict[str, Any]],
    deliveries: Iterable[dict[str, Any]],
    stored: Iterable[dict[str, Any]],
) -> tuple[int, int, int]:
    """``lost`` (confirmed, never delivered), ``lost_from_storage`` (confirmed, absent from
    ``stored``) and the confirmed messages in either, each counted once. The two overlap as
    they like: a write the broker dropped before any consumer read it is in both, one a
    consumer read just before the broker lost it only in ``lost_from_storage``, one the broker
    kept that no consumer got only in ``lost``; so their sum may count a message twice."""
    outcome, _ = final_outcomes(sends)
    ok = {m for m, o in outcome.items() if o == "ok"}
    delivered = {d["id"] for d in deliveries}
    kept = {r["id"] for r in stored}
    return len(ok - delivered), len(ok - kept), len(ok - (delivered & kept))


def _latency(
    first_at: dict[str, float], first_send: dict[str, dict[str, Any]]
) -> tuple[dict[str, float], int]:
    """Percentiles of (time - send time) in ms over the messages of ``first_at``, and how many
    were negative (a clock step; counted as 0)."""
    latencies: list[float] = []
    anomalies = 0
    for mid, ts in first_at.items():
        ms = (ts - first_send[mid]["sent_ts"]) * 1000
        if ms < 0:
            anomalies += 1
            ms = 0.0
        latencies.append(ms)
    latencies.sort()
    return {
        "p50": round(percentile(latencies, 50), 3),
        "p95": round(percentile(latencies, 95), 3),
        "p99": round(percentile(latencies, 99), 3),
        "max": round(latencies[-1], 3) if latencies else 0.0,
    }, anomalies


def check(
    sends: Iterable[dict[str, Any]],
    deliveries: Iterable[dict[str, Any]],
    effects: Iterable[dict[str, Any]],
    replays: Iterable[dict[str, Any]] | None = None,
    stored: Iterable[dict[str, Any]] | None = None,
    output: Iterable[dict[str, Any]] | None = None,
    orders: Iterable[dict[str, Any]] | None = None,
) -> Counts:
    """The run's counts from its evidence. ``output``: an exactly-once run's copies as read
    once after the run (``lost_from_output``, ``output_duplicates``). ``orders``: the business
    rows the database holds after a run whose send is a business transaction (``phantom``)."""
    sends = list(sends)
    outcome, first_send = final_outcomes(sends)
    last_outcome_ts = max((s["ts"] for s in sends if "ts" in s), default=0.0)
    ordered = sorted(deliveries, key=lambda d: d["ts"])
    delivery_count: Counter[str] = Counter()
    first_delivery: dict[str, dict[str, Any]] = {}
    flagged_duplicates = 0
    delivered_by: Counter[str] = Counter()
    for d in ordered:
        delivered_by[d["consumer"]] += 1
        delivery_count[d["id"]] += 1
        if d["id"] in first_delivery:
            flagged_duplicates += bool(d.get("redelivered"))
        else:
            first_delivery[d["id"]] = d
    effect_count = Counter(e["id"] for e in effects)

    sent_ids = set(outcome)
    delivered_ids = set(first_delivery)
    got = delivered_ids & sent_ids
    began = min((s["sent_ts"] for s in first_send.values()), default=0.0)
    ok = {m for m, o in outcome.items() if o == "ok"}
    unknown = {m for m, o in outcome.items() if o == "unknown"}
    failed = {m for m, o in outcome.items() if o == "fail"}

    reordered = 0
    highest: dict[tuple[str, str], int] = {}
    # first_delivery is in delivery-time order; equal times (a batch recorded at once) keep the
    # order of the consumer's lines, which is the order the consumer got them in
    for d in (d for m, d in first_delivery.items() if m in got):
        s = first_send[d["id"]]
        stream = (s["producer"], s.get("key") or "")
        if s["seq"] < highest.get(stream, -1):
            reordered += 1
        highest[stream] = max(highest.get(stream, -1), s["seq"])

    latency, anomalies = _latency({m: first_delivery[m]["ts"] for m in got}, first_send)
    second_latency = None
    first_read: dict[str, float] = {}  # the second group's first read of each sent message
    if replays is not None:
        for r in replays:
            if r["id"] in sent_ids and r["ts"] < first_read.get(r["id"], math.inf):
                first_read[r["id"]] = r["ts"]
        second_latency, second_anomalies = _latency(first_read, first_send)
        anomalies += second_anomalies

    throughput = 0.0
    if got:
        end = max(first_delivery[m]["ts"] for m in got)
        throughput = len(got) / max(end - began, 1e-9)

    publish_rate = 0.0
    if ok and last_outcome_ts:
        publish_rate = len(ok) / max(last_outcome_ts - began, 1e-9)

    lost = ok - delivered_ids
    confirmed_at = sorted(s["ts"] for s in sends if s["outcome"] == "ok" and "ts" in s)
    gaps = (b - a for a, b in zip([began, *confirmed_at], confirmed_at, strict=False))
    return Counts(
        sent=len(sent_ids),
        confirmed=len(ok),
        failed=len(failed),
        unknown=len(unknown),
        delivered=len(got),
        lost=len(lost),
        unconfirmed_lost=len((failed | unknown) - delivered_ids),
        recovered=len(unknown & delivered_ids),
        unexpected=len(delivered_ids - sent_ids),
        duplicate_deliveries=sum(n - 1 for n in delivery_count.values()),
        duplicate_deliveries_flagged=flagged_duplicates,
        duplicate_effects=sum(n - 1 for n in effect_count.values() if n > 1),
        reordered=reordered,
        latency_ms=latency,
        throughput_per_s=round(throughput, 1),
        publish_per_s=round(publish_rate, 1),
        clock_anomalies=anomalies,
        delivered_by=dict(delivered_by),
        replayed=None if second_latency is None else len(first_read),
        second_group_latency_ms=second_latency,
        lost_ids=sorted(lost)[:50],
        lost_from_storage=None if stored is None else len(ok - {r["id"] for r in stored}),
        unavailable_s=round(max(gaps, default=0.0), 3),
        **_output_counts(ok, output),
        phantom=None if orders is None else len(got - {r["id"] for r in orders}),
    )


def _output_counts(ok: set[str], output: Iterable[dict[str, Any]] | None) -> dict[str, int]:
    if output is None:
        return {}
    copies = Counter(r["id"] for r in output)
    return {
        "lost_from_output": len(ok - copies.keys()),
        "output_duplicates": sum(n - 1 for n in copies.values()),
    }
