"""``--fault power-cut`` on the real servers: what a durability setting keeps when the power
goes, read from the evidence."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msglab.errors import UsageError
from msglab.infra.lazyfs.disk import folder_disk
from msglab.infra.lazyfs.mount import mounted
from msglab.infra.native import NativeBackend
from msglab.lab.compare import compare
from msglab.lab.faults import FAULTS, power
from msglab.lab.faults.power import PowerCut
from msglab.lab.matrix import Row
from msglab.lab.run import run
from msglab.lab.scenario import Scenario
from msglab.settings import Settings
from tests.infra.test_lifecycle import private_settings
from tests.lab import run_files


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
    stored = run_files.stored(tmp_path / scenario.run_id)
    confirmed = run_files.confirmed(tmp_path / scenario.run_id)
    assert r["lost_from_storage"] == len(confirmed - stored)  # recomputed from the evidence
    if fsync == "no":
        assert cut["dropped_bytes"] > 0
        assert r["lost_from_storage"] >= 500, r  # those confirmed before the cut, save a few
    else:
        assert cut["dropped_bytes"] == 0
        assert r["lost_from_storage"] == 0 and r["lost"] == 0, r


@pytest.mark.postgres
@pytest.mark.lazyfs
@pytest.mark.parametrize("profile", ["at-least-once", "at-most-once"])
def test_a_power_cut_of_the_files_folder(tmp_path: Path, profile: str) -> None:
    """The exchange folder's machine loses power with the producer and consumers on it. An
    at-least-once producer fsyncs each batch before it counts it as sent, so the folder keeps
    every confirmed message; an at-most-once producer never fsyncs, so what it confirmed since
    the folder was mounted is dropped (quarantined as torn batches, or gone)."""
    scenario = Scenario(
        transport="files",
        profile=profile,
        fault="power-cut",
        messages=1200,
        rate=1200,
        kill_after=500,
        down_s=0.5,
        drain_quiet_s=4.0,
    )
    r = run(scenario, runs_dir=tmp_path)
    (cut,) = [f for f in r["faults"] if f["fault"] == "power-cut" and f["action"] == "kill"]
    assert cut["target"] == "files" and cut["workers"] >= 2  # the producer and the consumer
    assert r["confirmed"] >= 400, r  # confirmed before the cut (the producer died with it)
    confirmed = run_files.confirmed(tmp_path / scenario.run_id)
    stored = run_files.stored(tmp_path / scenario.run_id)
    assert r["lost_from_storage"] == len(confirmed - stored)
    if profile == "at-least-once":
        assert r["lost_from_storage"] == 0 and r["lost"] == 0, r
    else:
        assert cut["dropped_bytes"] > 0
        assert r["lost_from_storage"] >= r["confirmed"] // 2, r
    folder = Settings.from_env().home / "files"
    assert not mounted(folder) and not (folder.parent / "files.lazyfs" / "data.backing").exists()


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.lazyfs
@pytest.mark.parametrize("commit", ["off", "on"])
def test_a_power_cut_of_the_outbox_database(tmp_path: Path, commit: str) -> None:
    """What PostgreSQL kept of the transactions it said were committed (``lab_orders``, one
    row per message, committed with its outbox row) is read after the run: with
    synchronous_commit off a commit returns before its WAL is flushed, and the cut loses the
    last ones; with on, none."""
    scenario = Scenario(
        transport="kafka",
        pattern="outbox",
        fault="db-power-cut",
        sets=(f"synchronous_commit={commit}",),
        messages=600,
        rate=300,
        kill_after=300,
        down_s=0.5,
        drain_quiet_s=4.0,
    )
    r = run(scenario, runs_dir=tmp_path)
    assert r["settings"]["postgres.synchronous_commit"] == commit
    stored = run_files.stored(tmp_path / scenario.run_id, "stored-db")
    assert r["lost_from_storage"] == len(run_files.confirmed(tmp_path / scenario.run_id) - stored)
    if commit == "off":
        assert r["lost_from_storage"] > 0, r
    else:
        assert r["lost_from_storage"] == 0 and r["lost"] == 0, r


def test_power_cut_on_files_applies_to_the_direct_pattern_only() -> None:
    with pytest.raises(UsageError, match="power-cut on files applies to --pattern direct"):
        Scenario(transport="files", fault="power-cut", pattern="outbox")


@pytest.mark.parametrize("pair", ["appendfsync=sometimes", "fsync=no", "appendfsync"])
def test_an_unknown_setting_is_refused_listing_the_valid_ones(pair: str) -> None:
    with pytest.raises(UsageError, match=r"valid|KEY=VALUE"):
        Scenario(transport="redis-streams", sets=(pair,))


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.lazyfs
def test_a_priced_row_measures_its_setting_without_the_fault(tmp_path: Path) -> None:
    """A power-cut row of the matrix also gives its price: the same settings publishing as
    fast as they can, with no fault, in batches of ``price_batch``; its own run folder holds
    the evidence the figure is computed from."""
    row = Row(
        "appendfsync always costs this much",
        "lost from storage == 0",
        lambda r: r["lost_from_storage"] == 0,
        "redis-streams",
        "at-least-once",
        "power-cut",
        sets=("appendfsync=always",),
        messages=600,
        rate=1200,
        kill_after=300,
        down_s=0.5,
        drain_quiet_s=3.0,
        price_batch=50,
        price_messages=2000,
    )
    (result,) = compare(tmp_path, quick=True, rows=[row])["rows"]
    price = result["price"]
    priced = json.loads((Path(price["evidence_dir"]) / "report.json").read_text())
    assert priced["fault"] == "none" and priced["scenario"]["batch"] == 50
    assert priced["settings"]["redis.appendfsync"] == "always"
    assert priced["confirmed"] == 2000 and price["publish_per_s"] == priced["publish_per_s"] > 0
    first_tries = [
        s["sent_ts"]
        for s in map(json.loads, (Path(price["evidence_dir"]) / "sends-p0.jsonl").open())
        if s["outcome"] == "sending"
    ]
    assert len(first_tries) == 2000 and len(set(first_tries)) == 2000 // 50  # one per batch


@pytest.mark.postgres
@pytest.mark.lazyfs
def test_ctrl_c_during_a_files_power_cut_leaves_no_mount(tmp_path: Path) -> None:
    """Interrupted while the folder's machine is down (after the cut, before it comes back):
    the run ends, the folder is off the lazy filesystem and its data back in place."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "msglab", "run", "-t", "files", "--fault", "power-cut"),
            *("-n", "100000", "--rate", "2000", "--kill-after", "1000", "--down", "60"),
            *("--runs-dir", str(tmp_path), "--json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    faults = tmp_path.glob("*/faults-orchestrator.jsonl")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any('"kill"' in f.read_text() for f in faults):
        time.sleep(0.2)
        faults = tmp_path.glob("*/faults-orchestrator.jsonl")
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, err
    folder = Settings.from_env().home / "files"
    assert not mounted(folder), Path("/proc/mounts").read_text()
    assert folder.is_dir() and not (folder.parent / "files.lazyfs" / "data.backing").exists()


def test_infra_down_takes_the_files_folder_off_the_lazy_filesystem(
    tmp_path: Path, lazyfs_available: None
) -> None:
    """A run killed outright leaves the folder mounted; ``infra down`` (everything) unmounts
    it and moves its data back."""
    settings = private_settings(tmp_path)
    disk = folder_disk(settings.home / "files")
    (settings.home / "files").mkdir(parents=True)
    (settings.home / "files" / "kept").write_text("batch\n")
    disk.enter()
    disk.attach(allow_other=False)
    assert mounted(settings.home / "files")
    NativeBackend(settings).down([])
    assert not mounted(settings.home / "files")
    assert (settings.home / "files" / "kept").read_text() == "batch\n"


def test_what_loses_power_is_the_faults_target_first() -> None:
    """db-power-cut cuts PostgreSQL whatever the transport: never the files folder (the
    folder's machine is power-cut's own for files) nor a cluster's nodes."""
    db = FAULTS["db-power-cut"]
    cut = FAULTS["power-cut"]
    assert isinstance(db, PowerCut) and isinstance(cut, PowerCut)
    assert db.grid(Scenario(transport="files", fault="db-power-cut")) is power.SERVER
    assert db.grid(Scenario(transport="kafka", fault="db-power-cut", cluster=True)) is power.SERVER
    assert cut.grid(Scenario(transport="files", fault="power-cut")) is power.FOLDER
    assert cut.grid(Scenario(transport="kafka", fault="power-cut", cluster=True)) is power.CLUSTER
    assert cut.grid(Scenario(transport="kafka", fault="power-cut")) is power.SERVER
