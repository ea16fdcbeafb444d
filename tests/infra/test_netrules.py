"""Partitions with nftables (msglab.infra.netrules): real processes with their own group ids on
their own loopback addresses, cut off from each other and healed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msglab.infra import netrules
from msglab.infra.netrules import CLIENTS, Host, NetRules

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not netrules.available(), reason="nftables rules need root and nft"
)

PORT = 47_500 + os.getpid() % 400  # apart from every msglab server's port
A = Host("n1", "127.0.9.1", 47_901)
B = Host("n2", "127.0.9.2", 47_902)
C = Host("n3", "127.0.9.3", 47_903)
NODES = (A, B, C)

# A node: listens on its address and echoes; "call ADDRESS": connects to another node, answers
# whether that worked; "open ADDRESS": opens a connection to another node and keeps it, counting
# what comes back on it ("received" answers the count); "push": sends on every connection it
# accepted (what a server does on a connection its peer opened).
NODE = """
import socket, sys, threading
addr, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((addr, port)); srv.listen(16)
peers, received = [], [0]
def count(c):
    while True:
        data = c.recv(100)
        if not data:
            return
        received[0] += len(data)
def serve(conn):
    while True:
        data = conn.recv(100)
        if not data:
            return
        word = data.decode().split()
        if word[0] == "call":
            c = socket.socket(); c.settimeout(1.0)
            try:
                c.connect((word[1], port)); c.sendall(b"ping"); ok = c.recv(10) == b"ping"
            except OSError:
                ok = False
            c.close()
            conn.sendall(b"yes" if ok else b"no")
        elif word[0] == "open":
            c = socket.create_connection((word[1], port), timeout=2.0); c.settimeout(None)
            threading.Thread(target=count, args=(c,), daemon=True).start()
            conn.sendall(b"opened")
        elif word[0] == "received":
            conn.sendall(str(received[0]).encode())
        elif word[0] == "push":
            for p in [p for p in peers if p is not conn]:
                try:
                    p.sendall(b"pushed")
                except OSError:
                    pass
            conn.sendall(b"done")
        else:
            conn.sendall(data)
while True:
    conn, _ = srv.accept(); peers.append(conn)
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


@pytest.fixture(scope="module")
def nodes() -> Iterator[None]:
    procs = [
        subprocess.Popen([sys.executable, "-c", NODE, h.address, str(PORT)], group=h.gid)
        for h in NODES
    ]
    deadline = time.monotonic() + 10
    for h in NODES:
        while not _reaches(h.address):
            assert time.monotonic() < deadline, f"node {h.name} did not listen"
            time.sleep(0.05)
    yield
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture
def rules(tmp_path: Path, nodes: None) -> Iterator[NetRules]:
    r = NetRules(tmp_path, "test-cluster")
    r.prepare(NODES)
    yield r
    r.heal()
    assert r.remove() and not r.active()


def _reaches(address: str, timeout: float = 1.0) -> bool:
    """Whether this process (a client: no node's group) gets an echo from ``address``."""
    try:
        with socket.create_connection((address, PORT), timeout=timeout) as c:
            c.sendall(b"hi")
            return c.recv(10) == b"hi"
    except OSError:
        return False


def _calls(src: Host, dst: Host) -> bool:
    """Whether node ``src`` reaches node ``dst`` (asked through the client's line to src)."""
    return _ask(src, f"call {dst.address}") == "yes"


def test_nodes_cut_apart_reach_neither_each_other_nor_are_reached(rules: NetRules) -> None:
    assert _calls(A, B) and _calls(B, A)
    rules.cut([A], [B], NODES)
    assert not _calls(A, B) and not _calls(B, A)
    assert _calls(A, C) and _calls(B, C) and _calls(C, A)  # C is on neither side
    assert _reaches(A.address) and _reaches(B.address)  # the clients are on neither side
    assert len(rules.rules()) == 4  # to the address and back on the peer's connections, x2
    assert rules.heal()
    assert _calls(A, B) and _calls(B, A)


def test_a_node_cut_from_the_clients_too(rules: NetRules) -> None:
    rules.cut([A], [B, C, CLIENTS], NODES)
    assert not _reaches(A.address)
    assert _reaches(B.address) and _calls(B, C)
    assert not _calls(B, A) and not _calls(C, A)  # (A cannot be asked: it is cut from us)


def test_a_push_on_a_connection_the_peer_opened_is_dropped(rules: NetRules) -> None:
    """B opened a connection to A; after the cut, what A sends on it (a push, as Erlang's
    distribution does on the one link two nodes share) never reaches B, not even its first
    packet. Before the cut it does (the check can fail)."""
    _assert_pushes_stop_at_the_cut(rules)


@pytest.mark.parametrize("where", ["other home", "same home"])
@pytest.mark.parametrize("order", ["other table first", "other table last"])
def test_another_clusters_marks_leave_this_ones(
    tmp_path: Path, rules: NetRules, where: str, order: str
) -> None:
    """Another cluster's table (of this home or another; its nodes other groups) sees this
    cluster's connections too: whichever table's chain runs first (the newest's), its marks
    must not make B's connection to A a client's, or A's push on it would pass the cut."""
    other = NetRules(tmp_path / "other" if where == "other home" else tmp_path, "other-cluster")
    assert other.table != rules.table
    others = [Host("m1", "127.0.8.1", 47_911), Host("m2", "127.0.8.2", 47_912)]
    if order == "other table first":
        other.prepare(others)
        rules.prepare(NODES)
    else:
        other.prepare(others)
    try:
        _assert_pushes_stop_at_the_cut(rules)
    finally:
        other.remove()


def _assert_pushes_stop_at_the_cut(rules: NetRules) -> None:
    """B opens a connection to A, A pushes on it and B receives (the check can fail); once A
    and B are cut apart, A's pushes on it never reach B, not even the first."""
    assert _ask(B, f"open {A.address}") == "opened"
    assert _ask(A, "push") == "done"
    time.sleep(0.3)
    before = int(_ask(B, "received"))
    assert before > 0
    rules.cut([A], [B], NODES)
    for _ in range(5):
        assert _ask(A, "push") == "done"
        time.sleep(0.1)
    time.sleep(0.3)
    assert int(_ask(B, "received")) == before


def _ask(node: Host, command: str) -> str:
    with socket.create_connection((node.address, PORT), timeout=2.0) as c:
        c.sendall(command.encode())
        return c.recv(20).decode()


def test_infra_down_removes_every_table_of_its_home_only(tmp_path: Path, rules: NetRules) -> None:
    mine = NetRules(tmp_path, "second-cluster")
    theirs = NetRules(tmp_path / "other", "test-cluster")
    mine.prepare(NODES)
    theirs.prepare(NODES)
    try:
        removed = netrules.remove_all(tmp_path)
        assert sorted(removed) == sorted([rules.table, mine.table])
        assert not rules.active() and not mine.active() and theirs.active()
        rules.prepare(NODES)  # the fixture removes it
    finally:
        theirs.remove()


def test_each_home_has_its_own_table(tmp_path: Path, rules: NetRules) -> None:
    other = NetRules(tmp_path / "other", "test-cluster")
    assert other.table != rules.table
    rules.cut([A], [B], NODES)
    assert not other.active() and not other.heal()
    other.cut([A], [C], NODES)
    assert other.heal() and other.remove() and not other.active()
    assert rules.active() and not _calls(A, B) and _calls(A, C)
