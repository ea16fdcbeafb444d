"""Short real scenarios of the patterns: dual write both ways (commit then publish, publish
then commit), transactional outbox (relay, database kill) and the idempotent consumer, each
asserting what its evidence shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from msglab.errors import UsageError
from msglab.lab.scenario import RELAY_BATCH, Scenario, fault_label
from tests.lab.run_files import confirmed, delivered, ids
from tests.lab.test_runs import jsonl, lab

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def kills(r: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["target"], f.get("detail", "")) for f in r["faults"] if f["action"] == "kill"]


@pytest.mark.parametrize("pattern", ["dual-write", "outbox"])
def test_a_producer_crash_after_its_commit_loses_only_under_dual_write(
    tmp_path: Path, pattern: str
) -> None:
    r = lab(
        tmp_path,
        transport="kafka",
        pattern=pattern,
        fault="producer-kill",
        messages=900,
        rate=1500,
        kill_after=300,
        drain_quiet_s=5.0,
    )
    ((target, detail),) = kills(r)
    assert target == "p0" and detail.startswith("after commit")
    assert r["confirmed"] >= 300  # "sent" is the committed business transaction
    assert r["phantom"] == 0  # nothing is published before its commit
    if pattern == "dual-write":
        assert r["lost"] > 0 and r["verdict"] == "broken"
        assert r["lost"] == r["confirmed"] - r["delivered"]
    else:
        assert r["lost"] == 0 and r["delivered"] == r["confirmed"]


def test_a_producer_crash_between_its_publish_and_its_commit_delivers_phantoms(
    tmp_path: Path,
) -> None:
    r = lab(
        tmp_path,
        transport="kafka",
        pattern="publish-then-commit",
        fault="producer-kill",
        messages=900,
        rate=1500,
        kill_after=300,
        drain_quiet_s=5.0,
    )
    ((target, detail),) = kills(r)
    assert target == "p0" and detail == "after publish 300, before committing"
    folder = Path(r["evidence_dir"])
    committed = ids(folder / "orders-db.jsonl")  # the business rows PostgreSQL holds
    assert confirmed(folder) == committed  # "sent" is the committed business transaction
    phantoms = delivered(folder) - committed  # recomputed from the raw files
    assert r["phantom"] == len(phantoms) > 0 and r["lost"] == 0
    assert r["verdict"] == "broken"
    assert (
        "phantom (delivered, its business transaction never committed)"
        in (folder / "report.html").read_text()
    )


@pytest.mark.parametrize("profile", ["effectively-once", "at-most-once"])
def test_a_relay_killed_midway_duplicates_one_batch_or_loses_it(
    tmp_path: Path, profile: str
) -> None:
    r = lab(
        tmp_path,
        transport="kafka",
        profile=profile,
        pattern="outbox",
        fault="relay-kill",
        messages=900,
        rate=1500,
        kill_after=300,
        drain_quiet_s=5.0,
    )
    ((target, detail),) = kills(r)
    assert target == "relay"
    if profile == "effectively-once":  # published, not marked: sent again, applied once
        assert "published, not yet marked" in detail
        assert r["lost"] == 0 and 0 < r["duplicate_deliveries"] <= RELAY_BATCH
        assert r["duplicate_effects"] == 0
    else:  # marked first, then killed before the publish: the batch is gone
        assert "marked, not yet published" in detail
        assert r["lost"] > 0 and r["duplicate_deliveries"] == 0


@pytest.mark.parametrize("ordering", ["keys", "skip-locked"])
def test_three_relays_keep_each_keys_order_only_with_key_shares(
    tmp_path: Path, ordering: str
) -> None:
    r = lab(
        tmp_path,
        transport="kafka",
        pattern="outbox",
        fault="relay-kill",
        messages=3000,
        rate=0,
        keys=48,
        relays=3,
        relay_ordering=ordering,
        warmup_s=3.0,
        drain_quiet_s=5.0,
    )
    ((target, detail),) = kills(r)
    assert target == "relay" and "published, not yet marked" in detail
    assert r["lost"] == 0 and 0 < r["duplicate_deliveries"] <= RELAY_BATCH
    if ordering == "keys":  # the dead relay's keys went on, in order, from the others
        assert r["reordered"] == 0
    else:  # two relays published one key's rows at once
        assert r["reordered"] > 0
    assert "3 relays" in fault_label(r)


def test_an_idempotent_consumer_applies_redeliveries_once(tmp_path: Path) -> None:
    r = lab(
        tmp_path,
        transport="kafka",
        profile="effectively-once",
        fault="consumer-kill",
        messages=900,
        kill_after=300,
    )
    assert r["duplicate_deliveries"] > 0  # offsets were not committed: they came again
    assert r["duplicate_effects"] == 0 and r["lost"] == 0 and r["verdict"] == "kept"


def test_the_outbox_loses_nothing_committed_across_a_database_kill(tmp_path: Path) -> None:
    r = lab(
        tmp_path,
        transport="kafka",
        pattern="outbox",
        fault="db-kill",
        messages=2400,
        rate=1200,
        kill_after=600,
        down_s=2.0,
    )
    assert [(f["action"], f["target"]) for f in r["faults"]] == [
        ("kill", "postgres"),
        ("restart", "postgres"),
    ]
    attempts = jsonl(Path(r["evidence_dir"]), "sends")
    assert any(s["outcome"] in ("fail", "unknown") for s in attempts)  # the outage was felt
    assert r["confirmed"] == 2400 and r["lost"] == 0


def test_patterns_refuse_what_cannot_work() -> None:
    with pytest.raises(
        UsageError, match="valid: direct, dual-write, publish-then-commit, outbox, cdc"
    ):
        Scenario(transport="kafka", pattern="saga")
    with pytest.raises(UsageError, match="--pattern outbox"):
        Scenario(transport="kafka", fault="relay-kill")
    with pytest.raises(UsageError, match="cannot promise effectively-once"):
        Scenario(transport="redis-pubsub", profile="effectively-once")


@pytest.mark.parametrize(
    ("profile", "fault"), [("at-least-once", "producer-kill"), ("at-most-once", "consumer-kill")]
)
def test_file_batches_survive_a_producer_crash_and_lose_under_at_most_once(
    tmp_path: Path, profile: str, fault: str
) -> None:
    r = lab(
        tmp_path,
        transport="files",
        profile=profile,
        fault=fault,
        messages=1200,
        rate=1500,
        kill_after=500,
        drain_quiet_s=5.0,
    )
    assert r["broker_cleanup"] == "deleted"
    if fault == "producer-kill":  # the batch in writing is a temporary file nobody reads
        assert r["lost"] == 0 and r["unexpected"] == 0 and r["duplicate_deliveries"] == 0
    else:  # the taken batch was marked done before its messages were handled
        assert r["lost"] > 0 and r["duplicate_effects"] == 0


def test_the_files_transport_refuses_server_faults() -> None:
    with pytest.raises(UsageError, match="files has no server for broker-kill"):
        Scenario(transport="files", fault="broker-kill")


@pytest.mark.connect
def test_cdc_delivers_every_committed_row_and_a_connect_kill_only_duplicates(
    tmp_path: Path,
) -> None:
    r = lab(
        tmp_path,
        transport="kafka",
        pattern="cdc",
        fault="connect-kill",
        messages=2000,
        rate=1000,
        kill_after=500,
        down_s=1.0,
    )
    assert [(f["action"], f["target"]) for f in r["faults"]] == [
        ("kill", "connect"),
        ("restart", "connect"),
    ]
    assert r["confirmed"] == 2000 and r["lost"] == 0 and r["reordered"] == 0
    assert r["duplicate_deliveries"] > 0  # since the last offset flush, published again


def test_cdc_needs_kafka_and_connect_kill_needs_cdc() -> None:
    with pytest.raises(UsageError, match="use -t kafka"):
        Scenario(transport="rabbitmq", pattern="cdc")
    with pytest.raises(UsageError, match="--pattern cdc"):
        Scenario(transport="kafka", pattern="outbox", fault="connect-kill")
