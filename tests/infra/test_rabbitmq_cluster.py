"""`rabbitmq-cluster`: three real RabbitMQ nodes on 127.0.2.1-3, started once for this module.

The cluster forms (three members, no epmd); a pika client given the status URL publishes with
confirms to a quorum queue with three replicas, the queue leader's node is SIGKILLed, and every
confirmed message is consumed from another node; the node rejoins after `infra restart`;
`msglab publish` and `consume --cluster` go through a quorum queue on all three; a node
cut off from the two others (nftables) pauses (`pause_minority`) and is a member again once
healed; a node whose address is taken or whose data is broken fails `up` naming the node;
`infra down` leaves no process. The failures run on a second, private cluster (own home and
ports).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msglab.errors import MsglabError, ServerStartError
from msglab.infra import netrules, process
from msglab.infra.native import NativeBackend
from msglab.infra.rabbitmq_cluster import RabbitMQCluster
from msglab.infra.service import node_group
from msglab.settings import Settings, in_ci
from tests.conftest import run_cli
from tests.infra import clusters

N = 500
NODES = ("n1", "n2", "n3")


def node_processes(gid: int) -> list[int]:
    """Every process running with group ``gid`` (a node's)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and process.is_alive(int(proc.name)):
            try:
                status = (proc / "status").read_text()
            except OSError:
                continue
            gid_line = next(line for line in status.splitlines() if line.startswith("Gid:"))
            if int(gid_line.split()[1]) == gid:
                found.append(int(proc.name))
    return found


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitMQCluster]:
    """rabbitmq-cluster up (MSGLAB_HOME, MSGLAB_*_PORT of this run) for the module; down after."""
    backend = NativeBackend(Settings.from_env())
    try:
        (report,) = backend.up(["rabbitmq-cluster"])
    except MsglabError as exc:
        if in_ci():
            pytest.fail(f"rabbitmq-cluster could not start: {exc}", pytrace=False)
        pytest.skip(f"rabbitmq-cluster could not start: {exc}")
    print(f"rabbitmq-cluster: {'cold' if report.cold else 'warm'} start in {report.seconds:.1f}s")
    try:
        yield RabbitMQCluster(Settings.from_env())
    finally:
        backend.down(["rabbitmq-cluster"])


def connect(url: str) -> Any:
    """A pika connection to the first node of ``url`` (comma-separated AMQP URLs) that takes it."""
    import pika

    return pika.BlockingConnection([pika.URLParameters(u) for u in url.split(",")])


@pytest.mark.rabbitmq
def test_three_nodes_form_one_cluster_on_their_own_addresses(cluster: RabbitMQCluster) -> None:
    settings = Settings.from_env()
    port, dist = settings.ports["rabbitmq"], settings.ports["rabbitmq_dist"]
    rows = cluster_status()
    assert [r["node"] for r in rows] == list(NODES)
    assert [r["address"] for r in rows] == [f"127.0.2.{i}:{port}" for i in (1, 2, 3)]
    url = ",".join(f"amqp://guest:***@127.0.2.{i}:{port}/%2F" for i in (1, 2, 3))
    assert {r["url"] for r in rows} == {url}  # the password hidden in each URL
    assert all(r["healthy"] and r["pid"] and r["role"] == "member" for r in rows), rows
    assert cluster.running_nodes(["n1"]) == ("n1", set(NODES))
    for i, row in enumerate(rows, start=1):
        host = f"127.0.2.{i}"  # AMQP and the distribution on the node's own address only
        assert clusters.listening_addresses(row["pid"]) == {f"{host}:{port}", f"{host}:{dist}"}
        names = {process.process_name(p) for p in node_processes(node_group(host))}
        assert "beam.smp" in names and "epmd" not in names, names
    cookie = cluster.root / ".erlang.cookie"
    assert cookie.stat().st_mode & 0o777 == 0o400
    rss_mb = (
        sum(
            int(line.split()[1])
            for r in rows
            for line in Path(f"/proc/{r['pid']}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        // 1024
    )
    print(f"rabbitmq-cluster: the three beam.smp hold {rss_mb} MB (RSS)")


@pytest.mark.rabbitmq
def test_msglab_publish_and_consume_with_cluster_use_a_quorum_queue_on_every_node(
    cluster: RabbitMQCluster,
) -> None:
    topic, group = clusters.cli_round_trip("rabbitmq", "rabbitmq-cluster", 1000, "at-least-once")
    assert sorted(cluster.quorum_status(f"{topic}.{group}")) == list(NODES)


@pytest.mark.rabbitmq
def test_confirmed_messages_survive_a_kill_of_the_quorum_queue_leader_and_the_node_rejoins(
    cluster: RabbitMQCluster,
) -> None:
    import pika

    url = cluster_status()[0]["url"].replace("***", "guest")
    queue = f"qq_{uuid.uuid4().hex[:8]}"
    with connect(url) as conn:
        channel = conn.channel()
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        states = cluster.quorum_status(queue)
        assert sorted(states) == list(NODES), states  # three replicas, one on each node
        assert sorted(states.values()) == ["follower", "follower", "leader"], states
        time.sleep(1.0)  # 3.10 loses a quorum queue declared < 0.5 s before a kill (ra's registry)
        channel.confirm_delivery()
        for i in range(N):  # each publish waits for its confirm (raises if nacked)
            channel.basic_publish("", queue, str(i).encode(), pika.BasicProperties(delivery_mode=2))
    leader = cluster.queue_leader(queue)
    assert leader is not None
    run_cli("infra", "kill", f"rabbitmq-cluster/{leader}")
    assert cluster.nodes[leader].pid() is None

    other = next(svc for node, svc in cluster.nodes.items() if node != leader)
    got = consume(other.url, queue, N)
    assert sorted(got) == list(range(N))
    assert cluster.queue_leader(queue) not in (None, leader)

    run_cli("infra", "restart", f"rabbitmq-cluster/{leader}")
    roles = {r["node"]: r["role"] for r in cluster_status()}
    assert roles == dict.fromkeys(NODES, "member"), roles
    deadline = time.monotonic() + 30  # its replica back in the queue's Raft group
    while sorted(cluster.quorum_status(queue).values()) != ["follower", "follower", "leader"]:
        assert time.monotonic() < deadline, cluster.quorum_status(queue)
        time.sleep(0.5)


def consume(url: str, queue: str, expected: int) -> list[int]:
    """Every message of ``queue`` through ``url`` (acked), retrying while the queue elects a
    new leader."""
    import pika

    got: list[int] = []
    deadline = time.monotonic() + 45
    while len(got) < expected and time.monotonic() < deadline:
        try:
            with connect(url) as conn:
                channel = conn.channel()
                channel.basic_qos(prefetch_count=200)
                for method, _props, body in channel.consume(queue, inactivity_timeout=2):
                    if method is None:
                        if len(got) >= expected:
                            break
                        continue
                    got.append(int(body))
                    channel.basic_ack(method.delivery_tag)
                    if len(got) >= expected or time.monotonic() > deadline:
                        break
                channel.cancel()
        except pika.exceptions.AMQPError:
            time.sleep(0.5)
    return got


@pytest.mark.rabbitmq
def test_a_node_cut_off_from_the_others_pauses_and_is_a_member_again_once_healed(
    cluster: RabbitMQCluster,
) -> None:
    """pause_minority: the node cut off from both others (not from the clients) sees itself in
    a minority and stops its RabbitMQ within net_ticktime (10 s); the two others count only
    each other as running. Healed, it starts again and all three are members."""
    if not netrules.available():
        pytest.skip("partitions need nftables' nft and root")
    hosts = cluster.hosts()
    cut = "n3"
    others = [hosts[n] for n in hosts if n != cut]
    try:
        cluster.net.cut([hosts[cut]], others, list(hosts.values()))
        assert cluster.net.rules()
        expected = {"n1": "member", "n2": "member", cut: "paused"}
        deadline = time.monotonic() + 40
        # n3 may pause before n1 has seen it go (both notice within net_ticktime): wait for both
        while (seen := (cluster.roles(), cluster.running_nodes(["n1"]))) != (
            expected,
            ("n1", {"n1", "n2"}),
        ):
            assert time.monotonic() < deadline, seen
            time.sleep(0.5)
        assert cluster.nodes[cut].pid() is not None  # paused, not gone
    finally:
        cluster.net.heal()
    assert not cluster.net.rules()
    deadline = time.monotonic() + 30
    while (roles := cluster.roles()) != dict.fromkeys(NODES, "member"):
        assert time.monotonic() < deadline, roles
        time.sleep(0.5)
    assert cluster.running_nodes([cut]) == (cut, set(NODES))


@pytest.mark.rabbitmq
def test_a_node_that_cannot_start_fails_up_naming_it_with_its_log(tmp_path: Path) -> None:
    backend = private_backend(tmp_path)
    data = tmp_path / "rabbitmq-cluster" / "n2" / "data"
    data.mkdir(parents=True)  # a feature flags file RabbitMQ cannot read: the node stops
    (data / "rabbit@127.0.2.2-feature_flags").write_text("not an Erlang term\n")
    began = time.monotonic()
    with pytest.raises(ServerStartError) as caught:
        backend.up(["rabbitmq-cluster"])
    assert time.monotonic() - began < backend.settings.start_timeout_s
    message = str(caught.value)
    assert "rabbitmq-cluster/n2" in message, message
    assert "feature_flags_file_read_error" in caught.value.log_tail, caught.value.log_tail
    assert no_node_runs(backend)  # n1 and n3, spawned by this up, are gone too
    assert not process.holders(tmp_path / "rabbitmq-cluster")


@pytest.mark.rabbitmq
def test_down_stops_every_node_and_leaves_no_process(cluster: RabbitMQCluster) -> None:
    pids = [r["pid"] for r in cluster_status()]
    assert all(pids)
    assert "rabbitmq-cluster" in run_cli("infra", "down", "rabbitmq-cluster").stdout
    assert not any(process.is_alive(pid) for pid in pids)
    rows = cluster_status()
    assert all(r["pid"] is None and not r["healthy"] and r["role"] is None for r in rows)
    assert not process.holders(cluster.root), "a process still holds the cluster's folder"
    for svc in cluster.nodes.values():  # the launcher script, port programs, no epmd
        assert svc.group is not None and not node_processes(svc.group), svc.name


def private_backend(home: Path) -> NativeBackend:
    return clusters.private_backend(home, ("rabbitmq", "rabbitmq_dist"), 60)


def no_node_runs(backend: NativeBackend) -> bool:
    return clusters.no_node_runs(backend, "rabbitmq-cluster")


def cluster_status() -> list[dict[str, Any]]:
    return clusters.cluster_status("rabbitmq-cluster")


@pytest.mark.rabbitmq
def test_a_node_whose_address_is_taken_is_refused_before_anything_starts(tmp_path: Path) -> None:
    backend = private_backend(tmp_path)
    clusters.assert_a_taken_address_is_refused(
        backend, "rabbitmq-cluster", "127.0.2.2", "rabbitmq_dist"
    )
    assert no_node_runs(backend)


def test_an_unknown_node_is_refused_listing_the_valid_ones() -> None:
    clusters.assert_an_unknown_node_is_refused("rabbitmq-cluster")
