"""``--fault power-cut`` on the real servers: what a durability setting keeps when the power
goes, read from the evidence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msglab.errors import UsageError
from msglab.lab.run import run
from msglab.lab.scenario import Scenario


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.lazyfs
@pytest.mark.parametrize("fsync", ["no", "always"])
def test_a_power_cut_keeps_what_redis_fsynced(tmp_path: Path, fsync: str) -> None:
    """The consumers read along, so they saw most messages before the cut: what Redis kept
    is read after the run by a group that read nothing before (``lost_from_storage``). With
    appendfsync no the AOF's unsynced tail, and with it the messages confirmed before the cut,
    is dropped; with always every confirmed message is kept."""
    scenario = Scenario(
        transport="redis-streams",
        fault="power-cut",
        sets=(f"appendfsync={fsync}",),
        messages=1500,
        rate=1500,
        kill_after=600,
        down_s=0.5,
        drain_quiet_s=5.0,
    )
    r = run(scenario, runs_dir=tmp_path)
    assert r["settings"]["redis.appendfsync"] == fsync  # read back from the server
    (cut,) = [f for f in r["faults"] if f["fault"] == "power-cut" and f["action"] == "kill"]
    assert r["simulated"].startswith("power cut")
    stored = {json.loads(line)["id"] for line in _lines(tmp_path, scenario.run_id, "stored-s0")}
    confirmed = {
        s["id"]
        for s in map(json.loads, _lines(tmp_path, scenario.run_id, "sends-p0"))
        if s["outcome"] == "ok"
    }
    assert r["lost_from_storage"] == len(confirmed - stored)  # recomputed from the evidence
    if fsync == "no":
        assert cut["dropped_bytes"] > 0
        assert r["lost_from_storage"] >= 500, r  # those confirmed before the cut, save a few
    else:
        assert cut["dropped_bytes"] == 0
        assert r["lost_from_storage"] == 0 and r["lost"] == 0, r


def _lines(runs: Path, run_id: str, name: str) -> list[str]:
    return (runs / run_id / f"{name}.jsonl").read_text().splitlines()


def test_power_cut_is_refused_where_there_is_no_server_to_cut() -> None:
    with pytest.raises(UsageError, match="no server for power-cut"):
        Scenario(transport="files", fault="power-cut")


@pytest.mark.parametrize("pair", ["appendfsync=sometimes", "fsync=no", "appendfsync"])
def test_an_unknown_setting_is_refused_listing_the_valid_ones(pair: str) -> None:
    with pytest.raises(UsageError, match=r"valid|KEY=VALUE"):
        Scenario(transport="redis-streams", sets=(pair,))
