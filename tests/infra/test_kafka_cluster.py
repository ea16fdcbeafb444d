"""`kafka-cluster`: three real Kafka KRaft nodes on 127.0.1.1-3, started once for this module.

The cluster forms; a plain confluent-kafka client writes with acks=all through the URL `status`
gives and reads back; one node SIGKILLed (`infra kill kafka-cluster/n2`) leaves a cluster that
still acknowledges acks=all writes (min ISR 2) and the node rejoins after `infra restart`;
`msglab publish`, `consume` and `bench --cluster` reach it (topics of RF 3); a node
whose address is taken or whose storage is broken fails `up` naming the node; `infra down`
leaves no process. The failures run on a second, private cluster (own home and ports).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msglab.errors import MsglabError, ServerStartError
from msglab.infra import process
from msglab.infra.kafka_cluster import KafkaCluster
from msglab.infra.native import NativeBackend
from msglab.infra.service import node_group
from msglab.settings import Settings, in_ci
from tests.conftest import run_cli
from tests.infra import clusters

N = 500
NODES = ("n1", "n2", "n3")


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[dict[str, Any]]]:
    """kafka-cluster up (MSGLAB_HOME, MSGLAB_*_PORT of this run) for the module; down after."""
    backend = NativeBackend(Settings.from_env())
    try:
        (report,) = backend.up(["kafka-cluster"])
    except MsglabError as exc:
        if in_ci():
            pytest.fail(f"kafka-cluster could not start: {exc}", pytrace=False)
        pytest.skip(f"kafka-cluster could not start: {exc}")
    print(f"kafka-cluster: {'cold' if report.cold else 'warm'} start in {report.seconds:.1f}s")
    try:
        yield cluster_status()
    finally:
        backend.down(["kafka-cluster"])


def produce(url: str, topic: str, values: range) -> list[int]:
    """Write ``values`` with acks=all (idempotent); the values the cluster acknowledged."""
    from confluent_kafka import Producer

    acked: list[int] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            acked.append(int(msg.value()))

    producer = Producer(
        {
            "bootstrap.servers": url,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": 30000,
        }
    )
    for i in values:
        producer.produce(topic, str(i).encode(), on_delivery=on_delivery)
    assert producer.flush(45) == 0
    return acked


def consume(url: str, topic: str, expected: int) -> list[int]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": url,
            "group.id": f"g_{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[int] = []
    deadline = time.monotonic() + 60
    while len(got) < expected and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            got.append(int(msg.value()))
    consumer.close()
    return got


def replicas_and_isr(url: str, topic: str) -> tuple[list[int], list[int]]:
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": url}).list_topics(topic, timeout=10)
    partition = meta.topics[topic].partitions[0]
    return sorted(partition.replicas), sorted(partition.isrs)


@pytest.fixture(scope="module")
def topic(cluster: list[dict[str, Any]]) -> str:
    """A new topic with 3 replicas, created with the admin API through the status URL."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"cluster_{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": cluster[0]["url"]})
    (future,) = admin.create_topics([NewTopic(name, 1, 3)]).values()
    future.result(30)
    return name


@pytest.mark.kafka
def test_three_nodes_on_their_own_addresses_and_one_controller_leader(
    cluster: list[dict[str, Any]],
) -> None:
    port = Settings.from_env().ports["kafka"]
    rows = cluster_status()
    assert [r["node"] for r in rows] == list(NODES)
    addresses = [f"127.0.1.{i}:{port}" for i in (1, 2, 3)]
    assert [r["address"] for r in rows] == addresses
    assert {r["url"] for r in rows} == {",".join(addresses)}
    assert all(r["healthy"] and r["pid"] and r["service"] == "kafka-cluster" for r in rows), rows
    roles = sorted(r["role"] for r in rows)
    assert roles == ["controller-follower", "controller-follower", "controller-leader"], rows
    controller_port = Settings.from_env().ports["kafka_controller"]
    for i, row in enumerate(rows, start=1):
        host = f"127.0.1.{i}"  # every listener on the node's own address, nowhere else
        assert clusters.listening_addresses(row["pid"]) == {
            f"{host}:{port}",
            f"{host}:{controller_port}",
        }
        argv = Path(f"/proc/{row['pid']}/cmdline").read_bytes().split(b"\0")
        assert b"-Xmx384m" in argv, argv
    rss_mb = (
        sum(
            int(line.split()[1])
            for r in rows
            for line in Path(f"/proc/{r['pid']}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        // 1024
    )
    print(f"kafka-cluster: the three JVMs hold {rss_mb} MB (RSS)")


@pytest.mark.kafka
def test_acks_all_through_the_status_url_and_read_back(
    cluster: list[dict[str, Any]], topic: str
) -> None:
    url = cluster[0]["url"]
    assert replicas_and_isr(url, topic) == ([1, 2, 3], [1, 2, 3])
    acked = produce(url, topic, range(N))
    assert sorted(acked) == list(range(N))
    assert sorted(consume(url, topic, N)) == list(range(N))


@pytest.mark.kafka
def test_msglab_publish_and_consume_with_cluster_use_every_node(
    cluster: list[dict[str, Any]],
) -> None:
    """`msglab publish -t kafka --cluster` bootstraps from every node and creates its topic
    with the cluster's replication factor (3); `msglab consume --cluster` reads it back."""
    topic, _group = clusters.cli_round_trip("kafka", "kafka-cluster", 2000, "at-least-once")
    assert replicas_and_isr(cluster[0]["url"], topic) == ([1, 2, 3], [1, 2, 3])


@pytest.mark.kafka
def test_bench_with_cluster_says_it_ran_on_the_cluster(cluster: list[dict[str, Any]]) -> None:
    args = ("bench", "publish", "-t", "kafka", "--cluster", "-n", "500", "--rounds", "1")
    out = json.loads(run_cli(*args, "--json").stdout)
    assert out["cluster"] == "kafka-cluster" and out["transport"] == "kafka", out
    assert out["msglab_msgs_per_s"] > 0 and out["raw_msgs_per_s"] > 0, out
    table = run_cli(*args).stdout
    assert "bench publish: kafka on kafka-cluster at-least-once" in table, table


@pytest.mark.kafka
def test_cluster_wide_settings_are_set_once_read_back_and_put_back(
    cluster: list[dict[str, Any]],
) -> None:
    """`msglab run --cluster --set` sets these on the whole cluster: read back from a node,
    the cluster-wide dynamic config (or feature level) what `saved_setting` puts back."""
    kc = NativeBackend(Settings.from_env()).cluster("kafka-cluster")
    assert kc.setting("min.insync.replicas") == "2"  # the cluster's, from its configuration
    before = kc.saved_setting("min.insync.replicas")
    kc.set_setting("min.insync.replicas", "1")
    try:
        assert kc.setting("min.insync.replicas") == "1"
        assert kc.nodes["n3"].setting("min.insync.replicas") == "1"  # every node has it
    finally:
        kc.set_setting("min.insync.replicas", before)
    assert kc.setting("min.insync.replicas") == "2"
    assert kc.setting("unclean.leader.election.enable") == "false"
    # Eligible Leader Replicas: the level the cluster finalized, read over ApiVersions; off
    # and on again over UpdateFeatures
    assert kc.setting("eligible.leader.replicas.version") == "1"
    kc.set_setting("eligible.leader.replicas.version", "0")
    assert kc.setting("eligible.leader.replicas.version") == "0"
    kc.set_setting("eligible.leader.replicas.version", "1")
    assert kc.setting("eligible.leader.replicas.version") == "1"
    # the next test restarts a node: Kafka 4.1.1/4.1.2 nodes could not replay the metadata log
    # these changes wrote after deleted topics (KAFKA-19497); 4.2 can


@pytest.mark.kafka
def test_a_killed_node_leaves_acks_all_writable_and_rejoins_after_restart(
    cluster: list[dict[str, Any]], topic: str
) -> None:
    url = cluster[0]["url"]
    before = {r["node"]: r for r in cluster_status()}
    run_cli("infra", "kill", "kafka-cluster/n2")
    assert not process.is_alive(before["n2"]["pid"])
    down = {r["node"]: r for r in cluster_status()}
    assert down["n2"]["pid"] is None and down["n2"]["healthy"] is False
    assert down["n2"]["role"] is None
    assert down["n1"]["healthy"] and down["n3"]["healthy"]

    # two replicas of three: min.insync.replicas=2 still acknowledges acks=all
    acked = produce(url, topic, range(N, 2 * N))
    assert sorted(acked) == list(range(N, 2 * N))
    replicas, isr = replicas_and_isr(url, topic)
    assert replicas == [1, 2, 3] and 2 not in isr, isr
    deadline = time.monotonic() + 15  # a leader is elected again if n2 was the leader
    while sorted(r["role"] or "-" for r in cluster_status()).count("controller-leader") != 1:
        assert time.monotonic() < deadline, cluster_status()
        time.sleep(0.5)

    run_cli("infra", "restart", "kafka-cluster/n2")
    after = {r["node"]: r for r in cluster_status()}
    assert after["n2"]["healthy"] and after["n2"]["pid"] not in (None, before["n2"]["pid"])
    assert after["n2"]["role"] in ("controller-leader", "controller-follower")
    assert [r["role"] for r in after.values()].count("controller-leader") == 1, after
    deadline = time.monotonic() + 60  # the restarted replica catches up, back in the ISR
    while replicas_and_isr(url, topic)[1] != [1, 2, 3]:
        assert time.monotonic() < deadline, replicas_and_isr(url, topic)
        time.sleep(1)
    assert sorted(consume(url, topic, 2 * N)) == list(range(2 * N))


@pytest.mark.kafka
def test_a_node_that_cannot_start_fails_up_naming_it_with_its_log(tmp_path: Path) -> None:
    backend = private_backend(tmp_path)
    broken = tmp_path / "kafka-cluster" / "n2" / "data"
    broken.mkdir(parents=True)  # storage formatted for another node id: Kafka refuses to start
    (broken / "meta.properties").write_text(
        "version=1\nnode.id=7\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\n"
        "directory.id=BBBBBBBBBBBBBBBBBBBBBB\n"
    )
    began = time.monotonic()
    with pytest.raises(ServerStartError) as caught:
        backend.up(["kafka-cluster"])
    assert time.monotonic() - began < backend.settings.start_timeout_s
    message = str(caught.value)
    assert "kafka-cluster/n2" in message, message
    assert "last lines of the log" in message and "Stored node id 7" in caught.value.log_tail, (
        message
    )
    assert no_node_runs(backend)  # n1 and n3, spawned by this up, are gone too


@pytest.mark.kafka
def test_each_node_runs_as_its_own_group_and_a_partition_moves_the_leadership(
    cluster: list[dict[str, Any]],
) -> None:
    """Each node's processes carry the node's group id (its identity in nftables' rules). The
    controller leader cut off from both other nodes (not from the clients) loses the quorum's
    leadership to one of them within seconds; healed, all three agree on one leader again."""
    kc = KafkaCluster(Settings.from_env())
    for svc in kc.nodes.values():
        pid = svc.pid()
        assert pid is not None
        gid_line = next(
            line
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("Gid:")
        )
        assert int(gid_line.split()[1]) == svc.group == node_group(svc.host)
    leader = _leader(kc)
    hosts = kc.hosts()
    others = [hosts[n] for n in hosts if n != leader]
    try:
        kc.net.cut([hosts[leader]], others, list(hosts.values()))
        assert kc.net.rules()
        deadline = time.monotonic() + 30
        while (new := _leader(kc, among=[n for n in hosts if n != leader])) is None:
            assert time.monotonic() < deadline, f"no new leader: {kc.roles()}"
            time.sleep(0.5)
    finally:
        kc.net.heal()
    assert not kc.net.rules()
    deadline = time.monotonic() + 30
    while sorted(kc.roles().values()) != ["controller-follower"] * 2 + ["controller-leader"]:
        assert time.monotonic() < deadline, kc.roles()
        time.sleep(0.5)
    assert new != leader


def _leader(kc: KafkaCluster, among: list[str] | None = None) -> str | None:
    """The node the quorum names leader now (only when it is one of ``among``)."""
    leaders = [n for n, role in kc.roles().items() if role == "controller-leader"]
    if len(leaders) != 1 or (among is not None and leaders[0] not in among):
        return None
    return leaders[0]


@pytest.mark.kafka
def test_down_stops_every_node_and_leaves_no_process(cluster: list[dict[str, Any]]) -> None:
    pids = [r["pid"] for r in cluster_status()]
    assert all(pids)
    assert "kafka-cluster" in run_cli("infra", "down", "kafka-cluster").stdout
    assert not any(process.is_alive(pid) for pid in pids)
    rows = cluster_status()
    assert all(r["pid"] is None and not r["healthy"] and r["role"] is None for r in rows)
    home = str(Settings.from_env().home / "kafka-cluster")
    assert not process.holders(Path(home)), "a process still holds the cluster's folder"


def private_backend(home: Path) -> NativeBackend:
    return clusters.private_backend(home, ("kafka", "kafka_controller"), 60)


def no_node_runs(backend: NativeBackend) -> bool:
    return clusters.no_node_runs(backend, "kafka-cluster")


def cluster_status() -> list[dict[str, Any]]:
    return clusters.cluster_status("kafka-cluster")


@pytest.mark.kafka
def test_a_node_whose_address_is_taken_is_refused_before_anything_starts(tmp_path: Path) -> None:
    backend = private_backend(tmp_path)
    clusters.assert_a_taken_address_is_refused(backend, "kafka-cluster", "127.0.1.2", "kafka")
    assert no_node_runs(backend)


def test_an_unknown_node_is_refused_listing_the_valid_ones() -> None:
    clusters.assert_an_unknown_node_is_refused("kafka-cluster")
