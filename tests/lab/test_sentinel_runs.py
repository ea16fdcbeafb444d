"""``msglab run -t redis-streams --cluster`` on the real redis-sentinel: the faults hit the
primary as the Sentinels name it when the fault fires, and the run's evidence is checked
against the files it rests on.

Redis replicates asynchronously and a primary cut off from its replicas keeps acknowledging
writes (``min-replicas-to-write`` 0), so a failover may lose acknowledged writes: these tests
assert what must hold whatever the server does (the run completes, the fault names the primary,
``lost_from_storage`` is the confirmed ids absent from what the storage group read back) and
print the figures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msglab.infra.native import NativeBackend
from msglab.infra.redis_sentinel import RedisSentinel
from msglab.lab.run import run
from msglab.lab.scenario import Scenario
from msglab.settings import Settings
from tests.lab import run_files

pytestmark = pytest.mark.redis

NODES = ("n1", "n2", "n3")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisSentinel]:
    """The runs bring redis-sentinel up themselves; it goes down after the module."""
    settings = Settings.from_env()
    yield RedisSentinel(settings)
    NativeBackend(settings).down(["redis-sentinel"])


def _checked(r: dict[str, Any], folder: Path, fault: str) -> dict[str, Any]:
    """The report's counts recomputed from the run's files; the figures printed."""
    confirmed = run_files.confirmed(folder)
    delivered = run_files.delivered(folder)
    stored = run_files.stored(folder)
    assert r["confirmed"] == len(confirmed), r
    assert r["lost_from_storage"] == len(confirmed - stored), r
    assert r["lost"] == len(confirmed - delivered), r
    print(
        f"redis-sentinel {fault}: confirmed {r['confirmed']}, lost {r['lost']}, "
        f"lost_from_storage {r['lost_from_storage']}, unavailable_s {r['unavailable_s']}"
    )
    return r


def _primary_fault(r: dict[str, Any], action: str) -> dict[str, Any]:
    (record,) = [f for f in r["faults"] if f["action"] == action]
    assert record["node"] in NODES and record["target"] == f"redis-sentinel/{record['node']}"
    assert record["why"].startswith("primary as the Sentinels name it"), record
    return record


def test_a_killed_primary_is_named_and_comes_back(tmp_path: Path, cluster: RedisSentinel) -> None:
    """The primary's node (its Redis server and its Sentinel) SIGKILLed for 2 s: about the
    Sentinels' down-after-milliseconds, so the node is usually back before any failover."""
    scenario = Scenario(
        transport="redis-streams",
        cluster=True,
        fault="leader-kill",
        messages=3000,
        rate=1500,
        kill_after=1000,
        down_s=2.0,
        drain_quiet_s=10.0,
    )
    r = run(scenario, runs_dir=tmp_path)
    kill = _primary_fault(r, "kill")
    (back,) = [f for f in r["faults"] if f["action"] == "restart"]
    assert back["target"] == kill["target"] and len(kill["pids"]) == 2  # redis and sentinel
    _checked(r, tmp_path / scenario.run_id, "leader-kill 2 s")
    assert all(role is not None for role in cluster.roles().values())  # every node back


@pytest.mark.parametrize(("down_s", "messages"), [(2.0, 3000), (8.0, 15000)])
def test_a_primary_cut_off_from_its_replicas(
    tmp_path: Path, cluster: RedisSentinel, down_s: float, messages: int
) -> None:
    """The D1 case: the primary loses its replicas and the other two Sentinels, its clients
    still reach it and it keeps acknowledging. For 2 s nothing is decided yet; for 8 s the two
    other Sentinels promote a replica, and the old primary, made a replica when the cut heals,
    drops what it acknowledged alone (the figures say how much)."""
    scenario = Scenario(
        transport="redis-streams",
        cluster=True,
        fault="partition",
        messages=messages,
        rate=1500,
        kill_after=1000,
        down_s=down_s,
        drain_quiet_s=10.0,
    )
    r = run(scenario, runs_dir=tmp_path)
    cut = _primary_fault(r, "cut")
    assert cut["sides"] == [[cut["node"]], [n for n in NODES if n != cut["node"]]]
    assert cut["rules"]
    _checked(r, tmp_path / scenario.run_id, f"partition {down_s:g} s")
    assert not cluster.net.rules()  # healed
