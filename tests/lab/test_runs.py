"""Short real scenarios: each asserts the property its evidence shows, recomputed by hand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from msglab.lab.run import run
from msglab.lab.scenario import Scenario

REPORT_KEYS = {
    "run_id",
    "transport",
    "profile",
    "fault",
    "sent",
    "confirmed",
    "failed",
    "unknown",
    "delivered",
    "lost",
    "unconfirmed_lost",
    "recovered",
    "unexpected",
    "duplicate_deliveries",
    "duplicate_effects",
    "reordered",
    "latency_ms",
    "throughput_per_s",
    "promise",
    "verdict",
    "evidence_dir",
}


def lab(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    report = run(Scenario(**fields), runs_dir=tmp_path)
    assert report.keys() >= REPORT_KEYS
    assert report["broker_cleanup"] in ("deleted", "nothing stored"), report["broker_cleanup"]
    assert json.loads((Path(report["evidence_dir"]) / "report.json").read_text()) == report
    page = (Path(report["evidence_dir"]) / "report.html").read_text()  # its picture
    assert page.count('<svg class="timeline"') == 1
    assert f"confirmed {report['confirmed']}, delivered {report['delivered']}," in page
    assert f"lost {report['lost']}" in page
    recount(report)
    return report


def jsonl(folder: Path, kind: str) -> list[dict[str, Any]]:
    out = []
    for path in folder.glob(f"{kind}-*.jsonl"):
        for line in path.read_text().split("\n")[:-1]:  # the torn last line, if any, is skipped
            out.append(json.loads(line))
    return out


def recount(report: dict[str, Any]) -> None:
    """Recompute the main counts from the raw files, independently of msglab's checker."""
    folder = Path(report["evidence_dir"])
    sends, deliveries = jsonl(folder, "sends"), jsonl(folder, "deliveries")
    effects = jsonl(folder, "effects")
    ok = {s["id"] for s in sends if s["outcome"] == "ok"}
    delivered = Counter(d["id"] for d in deliveries)
    assert report["sent"] == len({s["id"] for s in sends})
    assert report["confirmed"] == len(ok)
    assert report["lost"] == len(ok - delivered.keys())
    assert report["duplicate_deliveries"] == sum(n - 1 for n in delivered.values())
    per_effect = Counter(e["id"] for e in effects)
    assert report["duplicate_effects"] == sum(n - 1 for n in per_effect.values())


@pytest.mark.kafka
@pytest.mark.postgres
def test_kafka_at_least_once_survives_a_broker_kill(tmp_path: Path) -> None:
    r = lab(tmp_path, transport="kafka", fault="broker-kill", messages=2000, rate=2000)
    assert [f["action"] for f in r["faults"]] == ["kill", "restart"]
    assert r["lost"] == 0 and r["verdict"] == "kept"


@pytest.mark.redis
@pytest.mark.postgres
def test_redis_pubsub_loses_what_is_published_while_nobody_listens(tmp_path: Path) -> None:
    r = lab(
        tmp_path,
        transport="redis-pubsub",
        profile="at-most-once",
        workload="no-subscriber",
        messages=500,
        drain_quiet_s=3.0,
    )
    assert r["confirmed"] == 500 and r["lost"] == 500 and r["delivered"] == 0
    assert r["verdict"] == "kept"  # at-most-once promises no duplicates, not delivery


@pytest.mark.rabbitmq
@pytest.mark.postgres
@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"fault": "broker-kill", "messages": 3000, "kill_after": 1500}, id="kill"),
        pytest.param(
            {"fault": "blackhole", "messages": 1500, "down_s": 4.0},
            id="blackhole",
            marks=pytest.mark.toxiproxy,
        ),
    ],
)
def test_rabbitmq_at_most_once_loses_transient_messages(
    tmp_path: Path, fault: dict[str, Any]
) -> None:
    r = lab(
        tmp_path,
        transport="rabbitmq",
        profile="at-most-once",
        rate=1500,
        drain_quiet_s=5.0,
        **fault,
    )
    assert r["lost"] + r["unconfirmed_lost"] > 0 and r["duplicate_effects"] == 0


@pytest.mark.redis
@pytest.mark.postgres
def test_redis_streams_consumer_killed_before_its_ack_duplicates_but_loses_nothing(
    tmp_path: Path,
) -> None:
    r = lab(
        tmp_path, transport="redis-streams", fault="consumer-kill", messages=600, kill_after=200
    )
    assert r["faults"][0]["fault"] == "consumer-kill"
    assert r["lost"] == 0 and r["duplicate_effects"] >= 1


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.toxiproxy
def test_kafka_at_least_once_loses_nothing_through_a_network_blackhole(tmp_path: Path) -> None:
    r = lab(tmp_path, transport="kafka", fault="blackhole", messages=2000, rate=1000, down_s=4.0)
    assert [f["action"] for f in r["faults"]] == ["add-toxic", "remove-toxic"]
    window = r["faults"][1]["ts"] - r["faults"][0]["ts"]
    assert window >= 4.0
    run_json = json.loads((Path(r["evidence_dir"]) / "run.json").read_text())
    (broker, _database) = run_json["servers"]
    assert (broker["service"], broker["owner"], broker["via"]) == ("kafka", "msglab", "toxiproxy")
    # the traffic really crossed the proxy: what was in flight waited out the blackhole
    assert r["latency_ms"]["max"] >= 0.8 * window * 1000
    assert r["lost"] == 0 and r["verdict"] == "kept"


@pytest.mark.kafka
@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_kafka_replays_to_a_new_group_rabbitmq_does_not(tmp_path: Path) -> None:
    kafka = lab(tmp_path, transport="kafka", workload="replay", messages=500)
    rabbit = lab(tmp_path, transport="rabbitmq", workload="replay", messages=500)
    for r, expected in ((kafka, 500), (rabbit, 0)):
        replays = jsonl(Path(r["evidence_dir"]), "replays")
        assert len({x["id"] for x in replays}) == r["replayed"] == expected
        assert r["confirmed"] == 500 and r["lost"] == 0
        assert r["duplicate_effects"] == 0  # the replay applies no effect


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_rabbitmq_fanout_every_group_gets_every_message(tmp_path: Path) -> None:
    r = lab(tmp_path, transport="rabbitmq", workload="fanout", messages=500, rate=1000)
    replays = jsonl(Path(r["evidence_dir"]), "replays")
    assert len({x["id"] for x in replays}) == r["replayed"] == r["delivered"] == 500
    assert r["lost"] == 0 and r["duplicate_effects"] == 0


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_rabbitmq_request_reply_answers_every_request(tmp_path: Path) -> None:
    r = lab(tmp_path, transport="rabbitmq", workload="request-reply", messages=500, rate=1000)
    replies = jsonl(Path(r["evidence_dir"]), "replays")
    assert len({x["id"] for x in replies}) == r["replayed"] == 500
    # a reply comes after its request was delivered: the round trip is the longer path
    assert r["second_group_latency_ms"]["p50"] >= r["latency_ms"]["p50"]
    assert r["lost"] == 0


@pytest.mark.kafka
@pytest.mark.postgres
def test_three_producers_and_two_consumers_share_the_load_in_key_order(tmp_path: Path) -> None:
    # 64 keys: murmur2 puts k0..k7 into only 2 of the 4 partitions (measured)
    r = lab(tmp_path, transport="kafka", messages=3000, producers=3, consumers=2, keys=64)
    folder = Path(r["evidence_dir"])
    sends = jsonl(folder, "sends")
    assert {s["producer"] for s in sends} == {"p0", "p1", "p2"}
    per_producer = Counter(s["producer"] for s in sends if s["outcome"] == "ok")
    assert sorted(per_producer.values()) == [1000, 1000, 1000]
    consumers = Counter(d["consumer"] for d in jsonl(folder, "deliveries"))
    assert set(consumers) == {"c0", "c1"}, "one consumer of the group got nothing"
    assert r["lost"] == 0 and r["reordered"] == 0 and r["delivered"] == 3000


def test_impossible_combination_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "msglab",
            "run",
            "-t",
            "redis-pubsub",
            "-p",
            "at-least-once",
            "--runs-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "stores nothing" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.redis
@pytest.mark.postgres
def test_ctrl_c_stops_every_worker_and_keeps_the_evidence(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "msglab",
            "run",
            "-t",
            "redis-streams",
            "-n",
            "100000",
            "--rate",
            "2000",
            "--runs-dir",
            str(tmp_path),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("*/sends-p0.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    workers = _children(proc.pid)
    assert workers, "no worker processes were started"
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    assert proc.returncode != 0
    time.sleep(0.5)
    assert not [
        pid
        for pid in workers
        if os.path.exists(f"/proc/{pid}")
        and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    ]
    (folder,) = list(tmp_path.iterdir())
    report = json.loads((folder / "report.json").read_text())
    assert report["interrupted"] is True and report["sent"] > 0


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.redis
@pytest.mark.postgres
def test_a_poison_message_is_dead_lettered_with_its_reason_after_three_deliveries(
    tmp_path: Path,
) -> None:
    r = lab(tmp_path, transport="redis-streams", workload="poison", messages=600, rate=1000)
    poison = r["poison"]
    folder = Path(r["evidence_dir"])
    (letter,) = jsonl(folder, "dead-letters")
    assert letter["id"] == poison["id"] and letter["error_type"] == "Poisoned"
    assert poison["dead_lettered"] and poison["attempts"] == 3 == r["dead_lettered"] * 3
    delivered = [d for d in jsonl(folder, "deliveries") if d["id"] == poison["id"]]
    assert (
        [d["attempt"] for d in delivered] == [1, 2, 3] == list(range(1, poison["deliveries"] + 1))
    )
    assert r["lost"] == 0 and r["duplicate_deliveries"] == 2  # the poison's two retries


@pytest.mark.redis
@pytest.mark.postgres
def test_a_graceful_stop_of_every_consumer_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    r = lab(
        tmp_path,
        transport="redis-streams",
        fault="consumer-stop",
        messages=900,
        rate=1500,
        kill_after=300,
        down_s=1.0,
    )
    actions = [(f["action"], f["target"]) for f in r["faults"]]
    assert actions == [("stop", "c0"), ("exited", "c0"), ("start", "c0")]
    assert r["faults"][1]["exit_code"] == 0, "the consumer did not stop gracefully"
    assert r["delivered_by"].keys() == {"c0", "c0-r"}
    assert r["lost"] == 0 and r["duplicate_deliveries"] == 0


@pytest.mark.kafka
@pytest.mark.postgres
def test_an_exactly_once_pipeline_keeps_each_message_once_across_a_consumer_kill(
    tmp_path: Path,
) -> None:
    r = lab(
        tmp_path,
        transport="kafka",
        profile="exactly-once",
        fault="consumer-kill",
        messages=1200,
        rate=1500,
        kill_after=400,
    )
    copies = Counter(o["id"] for o in jsonl(Path(r["evidence_dir"]), "output"))
    confirmed = {s["id"] for s in jsonl(Path(r["evidence_dir"]), "sends") if s["outcome"] == "ok"}
    assert r["lost_from_output"] == len(confirmed - copies.keys()) == 0
    assert r["output_duplicates"] == sum(n - 1 for n in copies.values()) == 0
    assert r["verdict"] == "kept" and r["worker_exits"]["c0"] == -9  # it did die mid-way
