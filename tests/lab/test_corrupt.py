"""The ``corrupt`` fault: a damaged batch file is quarantined with its reason and its messages
are named as such, not silently lost (a real run on the files transport); both damages break
the manifest's check; other transports refuse it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msglab.brokers.files import BadBatch, FilesTransport, read_batch
from msglab.config import ClientConfig
from msglab.errors import UsageError
from msglab.lab.faults.corrupt import _damage
from msglab.lab.matrix import FILES
from msglab.lab.scenario import Scenario
from msglab.message import Message
from tests.lab.test_runs import lab


@pytest.mark.parametrize("how", ["garble", "truncate"])
def test_each_damage_fails_the_manifest_check(tmp_path: Path, how: str) -> None:
    publisher = FilesTransport(ClientConfig(url=f"file://{tmp_path}")).publisher()
    publisher.publish("t", [Message(b'{"n": %d}' % i, id=f"m{i}") for i in range(20)])
    (data,) = (tmp_path / "t").glob("*.jsonl")
    detail = _damage(data, how)
    assert detail["ids"] == [f"m{i}" for i in range(20)]
    with pytest.raises(BadBatch, match="sha256" if how == "garble" else "bytes"):
        read_batch(data.parent, data.name.removesuffix(".jsonl"))


def test_only_the_files_transport_takes_it() -> None:
    with pytest.raises(UsageError, match="only -t files has them, not kafka"):
        Scenario(transport="kafka", fault="corrupt")


@pytest.mark.postgres
def test_a_corrupt_batch_is_quarantined_and_named(tmp_path: Path) -> None:
    r = lab(
        tmp_path,
        transport="files",
        fault="corrupt",
        messages=600,
        rate=1500,
        kill_after=200,
        drain_quiet_s=2.0,
    )
    (damage,) = r["faults"]
    (batch,) = r["quarantined_batches"]
    assert batch["batch"] == damage["target"] and "manifest says" in batch["reason"]
    assert r["lost"] == r["quarantined"] == damage["messages"] > 0
    folder = Path(r["evidence_dir"])
    lines = (folder / "quarantined-orchestrator.jsonl").read_text().splitlines()
    assert {*json.loads(lines[0])["ids"]} == {*damage["ids"]}
    delivered = {
        json.loads(line)["id"] for line in (folder / "deliveries-c0.jsonl").read_text().splitlines()
    }
    assert not delivered & {*damage["ids"]}  # the rest flowed: lost is exactly that batch
    row = next(row for row in FILES if row.fault == "corrupt")
    assert row.check(r)
