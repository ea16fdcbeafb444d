"""`redis-sentinel`: a Redis primary, two replicas and three Sentinels on 127.0.3.1-3, started
once for this module.

It forms (one primary, two connected replicas, three Sentinels that know each other); a redis-py
Sentinel client built from the URL `status` gives writes to the primary and reads from a
replica; `msglab publish` and `consume -t redis-streams --cluster` go through the Sentinels to
the primary; the primary's node SIGKILLed (`infra kill`, a host crash: its Redis and its
Sentinel) has a replica promoted within seconds, the same client writing to it, and the old
primary back as a replica after `infra restart`; the primary cut off from the two other nodes
but not from its clients keeps acknowledging writes while the others elect a new primary, and
those writes are gone once healed (Jepsen's Redis case; the count is printed, not asserted); a
node whose address is taken or that cannot start fails `up` naming it; `infra down` leaves no
process. The failures run on private clusters (own home and ports).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from msglab.errors import MsglabError, ServerStartError
from msglab.infra import process
from msglab.infra.native import NativeBackend
from msglab.infra.redis_sentinel import MASTER, RedisSentinel, sentinel_url_parts
from msglab.infra.service import node_group
from msglab.settings import Settings, in_ci
from tests.conftest import run_cli
from tests.infra import clusters

NODES = ("n1", "n2", "n3")
T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout_s: float, what: Callable[[], object]) -> T:
    """Poll ``check`` until it returns something true; fail showing ``what()`` after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, what()
        time.sleep(0.1)
    return found


def settled(rs: RedisSentinel) -> bool:
    """One primary, two replicas, every node joined."""
    roles = sorted(r or "-" for r in rs.roles().values())
    return roles == ["primary", "replica", "replica"] and not rs.missing(NODES)


COLD: list[bool] = []  # whether the module's cluster started on fresh data


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisSentinel]:
    """redis-sentinel up (MSGLAB_HOME, MSGLAB_*_PORT of this run) for the module; down after."""
    backend = NativeBackend(Settings.from_env())
    try:
        (report,) = backend.up(["redis-sentinel"])
    except MsglabError as exc:
        if in_ci():
            pytest.fail(f"redis-sentinel could not start: {exc}", pytrace=False)
        pytest.skip(f"redis-sentinel could not start: {exc}")
    print(f"redis-sentinel: {'cold' if report.cold else 'warm'} start in {report.seconds:.2f}s")
    COLD.append(report.cold)
    try:
        yield RedisSentinel(Settings.from_env())
    finally:
        backend.down(["redis-sentinel"])


def sentinel_client(url: str) -> Any:
    from redis.sentinel import Sentinel

    sentinels, master = sentinel_url_parts(url)
    assert master == MASTER
    return Sentinel(sentinels, socket_timeout=1.0)


@pytest.mark.redis
def test_one_primary_two_replicas_and_three_sentinels_that_know_each_other(
    cluster: RedisSentinel,
) -> None:
    import redis

    ports = Settings.from_env().ports
    rows = cluster_status()
    assert [r["node"] for r in rows] == list(NODES)
    assert [r["address"] for r in rows] == [f"127.0.3.{i}:{ports['redis']}" for i in (1, 2, 3)]
    sentinels = ",".join(f"127.0.3.{i}:{ports['sentinel']}" for i in (1, 2, 3))
    assert {r["url"] for r in rows} == {f"redis+sentinel://{sentinels}/msglab"}
    assert all(r["healthy"] and r["pid"] and r["service"] == "redis-sentinel" for r in rows), rows
    primary = cluster.primary()
    assert primary is not None
    assert [r["role"] for r in rows] == ["primary" if n == primary else "replica" for n in NODES], (
        rows
    )
    if COLD[0]:  # on fresh data n1 starts as the primary (after a failover: whoever won it)
        assert primary == "n1"
    rss_kb = 0
    for node, svc in cluster.nodes.items():
        for proc, port in ((svc, ports["redis"]), (svc.sentinel, ports["sentinel"])):
            pid = proc.pid()
            assert pid is not None, proc.name
            # each process on its node's address only, with its node's group id
            assert clusters.listening_addresses(pid) == {f"{svc.host}:{port}"}, proc.name
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            gid = next(line for line in status if line.startswith("Gid:")).split()[1]
            assert int(gid) == node_group(svc.host) == svc.group, proc.name
            rss_kb += int(next(line for line in status if line.startswith("VmRSS:")).split()[1])
        assert svc.sentinel.config_path.parent == cluster.root / node / "sentinel"
        view = redis.Redis(svc.host, ports["sentinel"]).sentinel_master(MASTER)
        assert (view["ip"], view["port"]) == (cluster.nodes[primary].host, ports["redis"]), view
        assert view["num-other-sentinels"] == 2 and view["num-slaves"] == 2, view
        assert view["quorum"] == 2, view
    print(f"redis-sentinel: the six processes hold {rss_kb // 1024} MB (RSS)")


@pytest.mark.redis
def test_a_sentinel_client_from_the_status_url_writes_to_the_primary_and_reads_a_replica(
    cluster: RedisSentinel,
) -> None:
    client = sentinel_client(cluster_status()[0]["url"])
    primary, replica = client.master_for(MASTER), client.slave_for(MASTER)
    key, value = f"k_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    assert primary.set(key, value)
    assert primary.execute_command("ROLE")[0] == b"master"
    assert primary.wait(2, 5000) == 2  # both replicas have it
    assert replica.execute_command("ROLE")[0] == b"slave"
    assert replica.get(key) == value.encode()


@pytest.mark.redis
def test_msglab_publish_and_consume_with_cluster_reach_the_primary_through_the_sentinels(
    cluster: RedisSentinel,
) -> None:
    topic, _ = clusters.cli_round_trip("redis-streams", "redis-sentinel", 1000, "at-least-once")
    client = sentinel_client(cluster_status()[0]["url"])
    primary = client.master_for(MASTER)
    assert primary.xlen(topic) == 1000 and primary.wait(2, 5000) == 2
    assert client.slave_for(MASTER).xlen(topic) == 1000  # replicated


@pytest.mark.redis
def test_settings_go_to_every_node_and_survive_its_restart(cluster: RedisSentinel) -> None:
    """`--set min-replicas-to-write=1` on redis-sentinel: every node, and in its configuration
    file: a replica killed and restarted (as a fault does) keeps it; put back, a restart does not
    bring it back."""
    wait_for(lambda: settled(cluster), 20, cluster.roles)
    replica = next(n for n, role in cluster.roles().items() if role == "replica")
    node = cluster.nodes[replica]
    before = cluster.saved_setting("min-replicas-to-write")
    cluster.set_setting("min-replicas-to-write", "1")
    try:
        assert cluster.setting("min-replicas-to-write") == "1"
        for svc in cluster.nodes.values():
            assert "min-replicas-to-write 1" in svc.config_path.read_text()
        cluster.kill([replica])
        cluster.restart([replica])
        assert node.setting("min-replicas-to-write") == "1"  # from its configuration file
    finally:
        cluster.set_setting("min-replicas-to-write", before)
    assert cluster.setting("min-replicas-to-write") == "0"
    cluster.restart([replica])
    assert node.setting("min-replicas-to-write") == "0"


@pytest.mark.redis
def test_a_streams_subscriber_follows_a_failover_and_misses_nothing(cluster: RedisSentinel) -> None:
    """A manual failover (SENTINEL FAILOVER) demotes the primary the subscriber reads from:
    it finds the new one through the Sentinels and delivers every entry written before and
    after (redis-py alone stays on the demoted primary, answered READONLY)."""
    from msglab.brokers import open_transport
    from msglab.config import ClientConfig
    from msglab.message import Message

    transport = open_transport("redis-streams", ClientConfig(url=cluster.url))
    topic = f"failover-{uuid.uuid4().hex[:8]}"
    sub = transport.subscriber("g")
    got: list[str] = []

    def consume() -> None:
        for batch in sub.batches(topic, 100):
            if batch is not None:
                got.extend(m.id for m in batch.messages)
                batch.ack()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    pub = transport.publisher()
    sent = [Message(b"x") for _ in range(100)]
    pub.publish(topic, sent[:50])
    wait_for(lambda: len(got) >= 50, 10, lambda: len(got))
    import redis

    wait_for(lambda: settled(cluster), 20, cluster.roles)
    old = cluster.primary()
    (host, port), *_ = sentinel_url_parts(cluster.url)[0]
    sentinel = redis.Redis(host, port)

    def failed_over() -> bool:  # a Sentinel that does not see a good replica yet aborts it
        if cluster.primary() not in (None, old):
            return True
        with contextlib.suppress(redis.ResponseError):  # INPROG: one is under way
            sentinel.execute_command("SENTINEL", "FAILOVER", MASTER)
        time.sleep(1)
        return False

    wait_for(failed_over, 40, cluster.roles)
    pub.close()
    pub = transport.publisher()  # a producer's reconnect (publishers do not retry)
    wait_for(lambda: _published(pub, topic, sent[50:]), 20, cluster.roles)
    wait_for(lambda: set(got) >= {m.id for m in sent}, 30, lambda: len(set(got)))
    sub.close()
    reader.join(10)
    pub.close()


def _published(pub: Any, topic: str, messages: list[Any]) -> bool:
    try:
        pub.publish(topic, messages)
    except MsglabError:
        return False
    return True


@pytest.mark.redis
def test_the_primarys_node_killed_a_replica_is_promoted_and_the_old_one_rejoins_as_replica(
    cluster: RedisSentinel,
) -> None:
    import redis

    old = cluster.primary()
    assert old is not None
    svc = cluster.nodes[old]
    pids = (svc.pid(), svc.sentinel.pid())
    client = sentinel_client(cluster.url).master_for(MASTER)
    assert client.set("before", "1")

    try:
        began = time.monotonic()
        out = run_cli("infra", "kill", f"redis-sentinel/{old}").stdout
        for pid in pids:  # a host crash: its Redis and its Sentinel
            assert f"killed pid {pid}" in out, out
            assert not process.is_alive(pid)
        new = wait_for(
            lambda: (
                (p := cluster.primary()) != old and cluster.roles().get(p or "") == "primary" and p
            ),
            15,
            cluster.roles,
        )
        failover_s = time.monotonic() - began
        print(f"redis-sentinel: {new} promoted {failover_s:.1f}s after {old} was killed")
        assert failover_s < 12

        def write() -> bool:  # the client from before the kill finds the new primary
            try:
                return bool(client.set("after", "2"))
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
                return False

        wait_for(write, 10, cluster.roles)
        master_address = client.connection_pool.get_master_address()
        assert master_address == (cluster.nodes[new].host, cluster.nodes[new].port)
        # the remaining replica attaches to the new primary within seconds (WAIT shorter than the
        # client's 1 s socket timeout, asked again)
        wait_for(lambda: client.wait(1, 500) >= 1, 15, cluster.roles)

        began = time.monotonic()
        run_cli("infra", "restart", f"redis-sentinel/{old}")
        # a primary's node that comes back is made a replica by the Sentinels, asynchronously
        # (they see it at their next ping): under load that took longer than the restart itself
        wait_for(lambda: cluster.roles()[old] == "replica", 15, cluster.roles)
        print(f"redis-sentinel: {old} back as a replica in {time.monotonic() - began:.1f}s")
        roles = cluster.roles()
        assert roles[old] == "replica" and roles[new] == "primary", roles
        assert sorted(r or "-" for r in roles.values()) == ["primary", "replica", "replica"]
        assert svc.pid() not in (None, pids[0]) and svc.sentinel.pid() not in (None, pids[1])
        back = redis.Redis(svc.host, svc.port)
        wait_for(lambda: back.get("after") == b"2", 10, back.info)  # it replicates the new primary
        assert "replicaof" in svc.config_path.read_text()  # rewritten by the Sentinels: kept
    finally:  # a failure here must not leave the later tests a node short
        if svc.pid() is None:
            run_cli("infra", "restart", f"redis-sentinel/{old}")


@pytest.mark.redis
def test_the_primary_cut_off_from_the_other_nodes_keeps_acknowledging_writes_that_are_lost(
    cluster: RedisSentinel,
) -> None:
    """Jepsen's Redis case: the primary partitioned from both other nodes (its Sentinel with it)
    but not from its clients. The majority elects a new primary within seconds while a plain
    client writing straight to the old primary keeps getting OK; healed, the old primary is made
    a replica of the new one and those acknowledged writes are gone. How many is printed."""
    import redis

    wait_for(lambda: settled(cluster), 20, cluster.roles)  # after the test before it
    old = cluster.primary()
    assert old is not None
    hosts = cluster.hosts()
    others = [hosts[n] for n in hosts if n != old]
    direct = redis.Redis(cluster.nodes[old].host, cluster.nodes[old].port, socket_timeout=2)
    prefix = f"split_{uuid.uuid4().hex[:6]}"
    acked: list[int] = []
    began = time.monotonic()
    try:
        cluster.net.cut([hosts[old]], others, list(hosts.values()))
        new, elected = None, 0.0
        while new is None or time.monotonic() < elected + 1.0:  # and one more second of writes
            if direct.set(f"{prefix}:{len(acked)}", 1):
                acked.append(len(acked))
            if new is None and len(acked) % 20 == 0:
                found = cluster.primary()
                if found not in (None, old):
                    new, elected = found, time.monotonic()
            assert time.monotonic() - began < 20, cluster.roles()
            time.sleep(0.005)
        roles = cluster.roles()
        assert roles[old] == "stale-primary" and roles[new] == "primary", roles
    finally:
        cluster.net.heal()
    assert not cluster.net.rules()
    print(f"redis-sentinel: {new} elected {elected - began:.1f}s after {old} was cut off")
    healed = time.monotonic()
    wait_for(lambda: settled(cluster), 30, lambda: (cluster.roles(), cluster.missing(NODES)))
    print(f"redis-sentinel: one primary again {time.monotonic() - healed:.1f}s after the heal")
    assert cluster.primary() == new and cluster.roles()[old] == "replica"
    survivor = redis.Redis(cluster.nodes[new].host, cluster.nodes[new].port)
    kept = sum(1 for _ in survivor.scan_iter(f"{prefix}:*", count=1000))
    print(
        f"redis-sentinel D1: {len(acked)} writes acknowledged by the cut-off primary {old}, "
        f"{kept} kept, {len(acked) - kept} lost"
    )
    # what the old primary acknowledged after the new one was elected cannot have reached it
    assert acked and 0 <= kept < len(acked)


def nothing_runs(backend: NativeBackend) -> bool:
    rs = backend.cluster("redis-sentinel")
    return all(p.pid() is None for svc in rs.nodes.values() for p in (svc, svc.sentinel))


@pytest.mark.redis
def test_a_node_that_cannot_start_fails_up_naming_it_with_its_log(tmp_path: Path) -> None:
    backend = private_backend(tmp_path)
    config = tmp_path / "redis-sentinel" / "n2" / "redis.conf"
    config.parent.mkdir(parents=True)
    config.write_text("bogus-directive yes\n")  # Redis refuses a config it does not know
    began = time.monotonic()
    with pytest.raises(ServerStartError) as caught:
        backend.up(["redis-sentinel"])
    assert time.monotonic() - began < 15
    message = str(caught.value)
    assert "redis-sentinel/n2" in message, message
    assert "Bad directive" in caught.value.log_tail, message
    assert nothing_runs(backend)  # n1, n3 and every Sentinel spawned by this up are gone too
    assert not process.holders(tmp_path / "redis-sentinel")


@pytest.mark.redis
def test_down_stops_every_process_and_leaves_no_table(cluster: RedisSentinel) -> None:
    pids = [p.pid() for svc in cluster.nodes.values() for p in (svc, svc.sentinel)]
    assert all(pids) and cluster.net.active()
    assert "redis-sentinel" in run_cli("infra", "down", "redis-sentinel").stdout
    assert not any(process.is_alive(pid) for pid in pids)
    rows = cluster_status()
    assert all(r["pid"] is None and not r["healthy"] and r["role"] is None for r in rows)
    assert not process.holders(cluster.root), "a process still holds the cluster's folder"
    assert not cluster.net.active()


def test_the_url_names_every_sentinel_and_the_master() -> None:
    url = "redis+sentinel://127.0.3.1:26390,127.0.3.2:26390/msglab"
    assert sentinel_url_parts(url) == ([("127.0.3.1", 26390), ("127.0.3.2", 26390)], "msglab")
    with pytest.raises(MsglabError):
        sentinel_url_parts("redis://127.0.3.1:26389/0")


def private_backend(home: Path) -> NativeBackend:
    return clusters.private_backend(home, ("redis", "sentinel"), 30)


def cluster_status() -> list[dict[str, Any]]:
    return clusters.cluster_status("redis-sentinel")


@pytest.mark.redis
@pytest.mark.parametrize("port", ["redis", "sentinel"])
def test_a_node_whose_address_is_taken_is_refused_before_anything_starts(
    tmp_path: Path, port: str
) -> None:
    backend = private_backend(tmp_path)
    message = clusters.assert_a_taken_address_is_refused(
        backend, "redis-sentinel", "127.0.3.2", port
    )
    assert f"MSGLAB_{port.upper()}_PORT" in message, message
    assert nothing_runs(backend)


def test_an_unknown_node_is_refused_listing_the_valid_ones() -> None:
    clusters.assert_an_unknown_node_is_refused("redis-sentinel")
