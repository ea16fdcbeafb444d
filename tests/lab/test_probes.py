"""The probes on the real servers: each asserts what it measured, recomputed from its figures."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from msglab.db import engine
from msglab.errors import UsageError
from msglab.infra import service_url
from msglab.infra.kafka import Kafka2
from msglab.lab.matrix import FULL, QUICK, Probe
from msglab.lab.probes import PROBES, run_probe
from msglab.settings import Settings
from tests.conftest import run_cli

SETTINGS = Settings.from_env()


def probe(name: str, variant: str) -> dict[str, Any]:
    r = run_probe(name, variant, SETTINGS)
    assert r["probe"] == name and r["variant"] == variant and r["measured"]
    return r


@pytest.mark.postgres
def test_a_read_modify_write_loses_updates_an_atomic_increment_does_not() -> None:
    naive = probe("concurrency", "read-modify-write")["figures"]
    atomic = probe("concurrency", "atomic-increment")["figures"]
    for f in (naive, atomic):
        assert f["lost_updates"] == f["expected"] - f["final"]
    assert naive["lost_updates"] > 0
    assert atomic["lost_updates"] == 0 and atomic["final"] == atomic["expected"]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("variant", ["optimistic-version", "redis-lock"])
def test_optimistic_locking_and_a_redis_lock_lose_no_update(variant: str) -> None:
    f = probe("concurrency", variant)["figures"]
    assert f["lost_updates"] == 0 and f["final"] == f["expected"]
    if variant == "optimistic-version":
        assert f["conflicts_retried"] > 0  # the version column did detect the races


@pytest.mark.postgres
def test_opposite_lock_orders_deadlock_a_fixed_order_does_not() -> None:
    assert probe("concurrency", "lock-order-opposite")["figures"]["deadlocks"] > 0
    assert probe("concurrency", "lock-order-fixed")["figures"]["deadlocks"] == 0


@pytest.mark.postgres
def test_two_phase_commit_applies_every_transfer_and_leaves_nothing_prepared() -> None:
    f = probe("two-phase-commit", "compare")["figures"]
    for variant in ("one_phase", "two_phase"):
        n = f[variant]["transfers"]
        assert f[variant]["balance_a_b"] == [-n, n]
    db = engine(service_url(SETTINGS, "postgres"))
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pg_prepared_xacts")).scalar_one() == 0


@pytest.mark.redis
@pytest.mark.toxiproxy
def test_the_circuit_breaker_fails_fast_while_redis_is_blackholed() -> None:
    f = probe("hygiene", "circuit-breaker")["figures"]
    outcomes = [o for _, o, _ in f["raw_calls"]]
    assert f["failed_after_waiting"] == outcomes.count("failed") >= 3
    assert f["refused_at_once"] == outcomes.count("refused") > 0
    assert f["max_refused_ms"] < 5.0 and f["mean_failed_s"] >= 0.5
    assert [s for _, s in f["transitions"]][-1] == "closed" == f["final_state"]


@pytest.mark.kafka
@pytest.mark.rabbitmq
@pytest.mark.redis
@pytest.mark.toxiproxy
def test_an_unreachable_broker_fails_within_its_timeouts_naming_host_port() -> None:
    f = probe("hygiene", "connect-timeout")["figures"]
    for transport in ("kafka", "rabbitmq", "redis-streams"):
        assert f[transport]["names_address"], f[transport]["error"]
        assert 2.5 <= f[transport]["seconds_to_fail"] <= 5.5, f[transport]


@pytest.mark.redis
@pytest.mark.toxiproxy
def test_the_bulkhead_refuses_over_capacity() -> None:
    f = probe("hygiene", "bulkhead")["figures"]
    assert f["refused_503"] > 0 and f["peak_inside"] == f["limit"] == 4
    assert f["accepted"] + f["refused_503"] >= f["callers"] * 10  # every call was answered


def test_unknown_probes_and_variants_list_the_valid_ones() -> None:
    with pytest.raises(UsageError, match="valid: concurrency, hygiene, two-phase-commit"):
        run_probe("saga", "x", SETTINGS)
    with pytest.raises(UsageError, match="valid: connect-timeout"):
        run_probe("hygiene", "x", SETTINGS)


@pytest.mark.redis
@pytest.mark.toxiproxy
def test_a_write_whose_reply_was_lost_is_found_by_reconciling_and_doubled_by_a_blind_retry() -> (
    None
):
    f = probe("hygiene", "lost-reply")["figures"]
    assert f["outcome"] == "unknown"  # the client could not know
    assert f["copies_found_on_reconcile"] == 1  # ... but the write had arrived
    assert f["copies_after_blind_retry"] == 2  # a retry of a non-idempotent write duplicates


@pytest.mark.kafka
def test_kafka_partitions_spread_over_two_capped_brokers_carry_more_than_on_one() -> None:
    f = probe("scaling", "kafka-brokers")["figures"]
    assert f["placement"]["one-broker"] == {"kafka": [0, 1, 2, 3], "kafka2": []}
    spread = f["placement"]["two-brokers"]
    assert sorted(spread["kafka"] + spread["kafka2"]) == [0, 1, 2, 3] and spread["kafka2"]
    quota_mb = f["quota_bytes_per_s_per_broker"] / 1e6
    assert 0.7 * quota_mb <= f["capped"]["one-broker"]["best_mb_per_s"] <= 1.2 * quota_mb
    assert f["capped_ratio"] >= 1.4  # the claim: the second broker's share adds to the first's
    assert f["uncapped"]["one-broker"]["best_msgs_per_s"] > 0  # measured, whatever the ratio
    assert Kafka2(SETTINGS).pid() is None  # the on-demand broker is stopped again


def test_every_probe_variant_is_a_row_of_the_full_matrix_once() -> None:
    rows = [(r.probe, r.variant) for r in FULL if isinstance(r, Probe)]
    assert sorted(rows) == sorted((name, v) for name, vs in PROBES.items() for v in vs)
    assert {(r.probe, r.variant) for r in QUICK if isinstance(r, Probe)} <= set(rows)


def test_the_probe_command_refuses_an_unknown_probe_listing_the_valid_ones() -> None:
    result = run_cli("probe", "saga", check=False)
    assert result.returncode == 2
    assert all(name in result.stderr for name in PROBES)


@pytest.mark.postgres
def test_the_probe_command_shows_the_measurement_and_the_claim_it_tests() -> None:
    (row,) = json.loads(run_cli("probe", "concurrency", "atomic-increment", "--json").stdout)
    assert row["observed"] is True and row["report"]["figures"]["lost_updates"] == 0
    assert row["claim"].startswith("Concurrency: an atomic increment")
    shown = run_cli("probe", "concurrency", "atomic-increment").stdout
    assert "atomic-increment" in shown and "increments" in shown and "observed" in shown
