"""What the cluster test modules share: a cluster's status rows, a private backend on free
ports, and the checks every cluster passes (a taken address refused naming the node, an
unknown node refused listing the valid ones, `msglab publish` and `consume --cluster` through
it)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from msglab.errors import PortInUseError
from msglab.infra import process
from msglab.infra.native import NativeBackend
from msglab.settings import CLUSTER_NODES, DEFAULT_PORTS, Settings
from tests.conftest import run_cli


def cluster_status(cluster: str) -> list[dict[str, Any]]:
    rows = json.loads(run_cli("infra", "status", cluster, "--json").stdout)
    return [dict(r) for r in rows]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def private_backend(home: Path, ports: tuple[str, ...], start_timeout_s: float) -> NativeBackend:
    """A backend of its own (``home``) whose ``ports`` are free ones."""
    chosen = {**DEFAULT_PORTS, **{name: free_port() for name in ports}}
    return NativeBackend(Settings(home=home, ports=chosen, start_timeout_s=start_timeout_s))


def no_node_runs(backend: NativeBackend, cluster: str) -> bool:
    return all(svc.pid() is None for svc in backend.cluster(cluster).nodes.values())


def assert_a_taken_address_is_refused(
    backend: NativeBackend, cluster: str, host: str, port_name: str
) -> str:
    """``up`` with ``host``:``port_name`` (node n2's) held by this process: refused within
    10 s, naming the node, the address and the holder, before any node starts. The message."""
    port = backend.settings.ports[port_name]
    began = time.monotonic()
    with socket.socket() as holder:
        holder.bind((host, port))
        holder.listen()
        with pytest.raises(PortInUseError) as caught:
            backend.up([cluster])
    assert time.monotonic() - began < 10
    message = str(caught.value)
    assert f"{cluster}/n2" in message and f"{host}:{port}" in message, message
    assert f"pid {os.getpid()}" in message, message
    return message


def assert_an_unknown_node_is_refused(cluster: str) -> None:
    result = run_cli("infra", "kill", f"{cluster}/n7", check=False)
    assert result.returncode == 2
    for node in CLUSTER_NODES[cluster]:
        assert f"{cluster}/{node}" in result.stderr


def listening_addresses(pid: int) -> set[str]:
    """The host:port of every TCP socket process ``pid`` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                address, _, port = fields[1].rpartition(":")
                found.add(f"{process._address(address)}:{int(port, 16)}")
    return found


def cli_round_trip(transport: str, cluster: str, count: int, profile: str) -> tuple[str, str]:
    """``msglab publish --cluster`` ``count`` messages to a new topic, then ``msglab consume
    --cluster`` them back as a new group, each in its own process as a user runs them: every
    message confirmed, then delivered once, both commands naming ``cluster``. The topic and
    the group."""
    topic, group = f"cli_{uuid.uuid4().hex[:8]}", "cli"
    where = ("-t", transport, "--cluster", "--topic", topic, "-p", profile, "--json")
    if transport == "rabbitmq":  # a message no queue is bound for yet is returned (failed)
        run_cli("consume", *where, "--group", group, "-n", "1", "--idle", "0.5")
    sent = json.loads(run_cli("publish", *where, "-n", str(count)).stdout)
    assert sent["cluster"] == cluster and sent["transport"] == transport, sent
    assert sent["confirmed"] == sent["sent"] == count, sent
    got = json.loads(
        run_cli("consume", *where, "--group", group, "-n", str(count), "--idle", "5").stdout
    )
    assert got["cluster"] == cluster, got
    assert got["deliveries"] == got["distinct"] == count and got["duplicates"] == 0, got
    return topic, group
