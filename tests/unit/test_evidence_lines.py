"""The evidence line format (msglab.lab.evidence): what the workers write is what the checker
parses and what the orchestrator's fast readers pick out, field for field."""

from __future__ import annotations

from pathlib import Path

from msglab.lab.checker import final_outcomes
from msglab.lab.evidence import (
    DELIVERIES,
    SENDS,
    STORED,
    Ledger,
    SendLines,
    confirmed_ids,
    delivery_lines,
    first_sendings,
    id_parts,
    ids,
    read,
    read_line,
)


def test_send_lines_parse_and_agree_with_the_fast_readers(tmp_path: Path) -> None:
    lines = SendLines("r1", "p0", ["k0", 'k"1'])  # a key that needs escaping
    bodies = [lines.body(0, 0), lines.body(1, 1), lines.body(2, 0)]
    first = lines.sending(bodies, 1, 100.5)
    first += lines.outcomes(
        list(zip(bodies, ["ok", "fail", "unknown"], strict=True)), 1, 100.5, 101.0
    )
    retry = lines.sending(bodies[1:2], 2, 102.0) + lines.outcomes(
        [(bodies[1], "ok")], 2, 102.0, 103.0
    )
    ledger = Ledger(tmp_path, SENDS, "p0")
    ledger.write_lines(first + retry)
    ledger.close()

    records = list(read(tmp_path, SENDS))
    assert [r["outcome"] for r in records] == [
        "sending",
        "sending",
        "sending",
        "ok",
        "fail",
        "unknown",
        "sending",
        "ok",
    ]
    assert records[1] == {
        "sent_ts": 100.5,
        "producer": "p0",
        "seq": 1,
        "id": "r1-p0-1",
        "key": 'k"1',
        "outcome": "sending",
        "try": 1,
    }
    assert records[-1]["ts"] == 103.0 and records[-1]["try"] == 2
    outcome, _first = final_outcomes(records)
    assert outcome == {"r1-p0-0": "ok", "r1-p0-1": "ok", "r1-p0-2": "unknown"}

    raw = (first + retry).encode()
    assert first_sendings(raw) == 3  # the retry's sending line is not a first attempt
    assert confirmed_ids(raw) == [b"r1-p0-0", b"r1-p0-1"]
    assert ids(raw) == [r["id"].encode() for r in records]


def test_delivery_and_read_lines(tmp_path: Path) -> None:
    text = delivery_lines("c0", [(5.0, "r1-p0-7", 1, "k1"), (5.5, "foreign-id", 3, None)])
    Ledger(tmp_path, DELIVERIES, "c0").write_lines(text)
    first, second = list(read(tmp_path, DELIVERIES))
    assert first == {
        "ts": 5.0,
        "consumer": "c0",
        "id": "r1-p0-7",
        "attempt": 1,
        "redelivered": False,
        "key": "k1",
        "producer": "p0",
        "seq": "7",
    }
    assert second["redelivered"] is True and second["key"] is None and second["seq"] is None
    assert ids(text.encode()) == [b"r1-p0-7", b"foreign-id"]

    Ledger(tmp_path, STORED, "s0").write_lines(read_line("s0", "r1-p0-7", 9.0))
    assert list(read(tmp_path, STORED)) == [{"ts": 9.0, "consumer": "s0", "id": "r1-p0-7"}]


def test_id_parts() -> None:
    assert id_parts("20261129-120000-ab12-p3-17") == ("p3", "17")
    assert id_parts("no-seq-here") == (None, None)
