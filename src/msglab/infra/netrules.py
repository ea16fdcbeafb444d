"""Network partitions on one machine: nftables rules between the nodes of a cluster.

Every node of a cluster listens on its own loopback address (127.0.0.0/8 is all loopback), but
a connection a node opens leaves from 127.0.0.1 like everyone's, so its source address does not
say who sent it. Who sent it is the process: each node runs with a group id of its own
(``Host.gid``), which the kernel keeps on every socket the node opens, and nftables matches it
(``meta skgid``). ``CLIENTS`` stands for every process that is no node of any cluster (the
lab's producers and consumers, a user's client), matched as "no group id of the range msglab
gives nodes" (``NODE_GROUPS``), so that another cluster's nodes are never taken for clients.

"``src`` cannot reach ``dst``" is two rules: what ``src``'s processes send to ``dst``'s address
is dropped, and so is what they send back on connections ``dst`` opened (a reply, or a push on
a connection both use: Erlang's distribution, a replica's link). The second needs to know who
opened a connection: while a cluster runs (``prepare``, at its start), each packet sent in a
connection's original direction marks its conntrack entry with the opener's group id (1 for
the clients), and a packet in the reply direction is matched by that mark.

Rules live in msglab's own tables, one per cluster of each ``MSGLAB_HOME``
(``inet msglab_<hash of the home>_<cluster>``), so that two clusters, or two homes, on one
machine never touch each other's rules and nothing else's rules are touched: a chain ``opener``
(the marks, while the cluster runs) and a chain ``partition`` (the drops, only while a
partition holds). ``heal`` empties ``partition``; ``remove`` (the cluster's ``down``) deletes
the table, ``remove_all`` (``infra down``) every table of the home. The marks are shared, the
conntrack entries being the machine's: every table's ``opener`` sees every connection, so a
table marks a connection as a client's only while no one has marked it (``ct mark 0``) and only
if no node opened it, and never overwrites the mark another table's node set (the group ids
are the nodes' addresses, distinct on one machine).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from msglab.errors import InfraError
from msglab.infra.service import GROUP_BASE, apt_install

CLIENT_ADDRESS = "127.0.0.1"  # where the connections of every process that binds none leave from
CLIENT_MARK = 1  # the conntrack mark of a connection a client opened (a node's: its gid)
NODE_GROUPS = f"{GROUP_BASE}-{GROUP_BASE + 65_535}"  # every group id a node may have


@dataclass(frozen=True)
class Host:
    """A node (``gid`` set: its processes run with that group id; ``address``: where it
    listens), or every other process (``gid`` None: the clients)."""

    name: str
    address: str
    gid: int | None


CLIENTS = Host("clients", CLIENT_ADDRESS, None)


def home_prefix(home: Path) -> str:
    """What the names of one ``MSGLAB_HOME``'s nftables tables start with."""
    digest = hashlib.sha1(str(home.resolve()).encode()).hexdigest()[:8]
    return f"msglab_{digest}_"


def table_name(home: Path, cluster: str) -> str:
    """msglab's nftables table for ``cluster`` of one ``MSGLAB_HOME``."""
    return home_prefix(home) + cluster.replace("-", "_")


def remove_all(home: Path) -> list[str]:
    """Delete every table of ``home`` (``infra down``: partitions a run cut short left; also
    the one table a home had before tables were per cluster); the tables deleted."""
    if not available():
        return []
    listed = _nft(["list", "tables", "inet"], check=False).stdout.split()
    prefix = home_prefix(home)
    mine = [name for name in listed if name.startswith(prefix) or name == prefix[:-1]]
    for name in mine:
        _nft(["delete", "table", "inet", name], check=False)
    return mine


def available() -> bool:
    return shutil.which("nft") is not None and os.geteuid() == 0


def install() -> None:
    """Debian's nftables, if ``nft`` is missing (root only)."""
    if not available():
        apt_install(["nftables"])


class NetRules:
    """Drop rules between hosts, in the table of one cluster of one home; every change is one
    ``nft -f`` transaction (all of a partition's rules appear at once, or none)."""

    def __init__(self, home: Path, cluster: str) -> None:
        self.table = table_name(home, cluster)

    def prepare(self, nodes: Sequence[Host]) -> None:
        """Mark every connection with the group of the process that opened it, from now on
        (a cluster's start, before its nodes connect); idempotent."""
        _require()
        marks = [*(Host(f"gid {g}", "", g) for g in _gids(nodes)), CLIENTS]
        self._apply(
            [
                f"add table inet {self.table}",
                f"delete table inet {self.table}",  # a clean start, whatever was there
                f"add table inet {self.table}",
                f"add chain inet {self.table} opener "
                "{ type filter hook output priority -10; policy accept; }",
                f"add chain inet {self.table} partition "
                "{ type filter hook output priority 0; policy accept; }",
                *(
                    f"add rule inet {self.table} opener ct direction original "
                    f"{'ct mark 0 ' if h.gid is None else ''}{_who(h)} "
                    f"ct mark set {_mark(h)}"
                    for h in marks
                ),
            ]
        )

    def cut(
        self, side_a: Sequence[Host], side_b: Sequence[Host], nodes: Sequence[Host]
    ) -> list[str]:
        """Drop every packet from a process of one side to the other side, both ways;
        ``nodes``: every node of the cluster (the clients are every other process). The drop
        rules added (a second cut adds to the first). A connection opened before ``prepare``
        is cut only from the next packet its opener sends."""
        _require()
        if not side_a or not side_b:
            raise InfraError("a partition needs a host on each side")
        if {h.name for h in side_a} & {h.name for h in side_b}:
            raise InfraError("a host cannot be on both sides of a partition")
        drops = [
            *(rule for src in side_a for dst in side_b for rule in _drops(src, dst)),
            *(rule for src in side_b for dst in side_a for rule in _drops(src, dst)),
        ]
        if not self.active():
            self.prepare(nodes)
        self._apply([f"add rule inet {self.table} partition {r}" for r in drops])
        return drops

    def rules(self) -> list[str]:
        """The partition's drop rules in force, as nft prints them."""
        if not available():
            return []
        result = _nft(["list", "chain", "inet", self.table, "partition"], check=False)
        lines = (line.strip() for line in result.stdout.splitlines())
        return [line for line in lines if line.endswith(" drop")] if result.returncode == 0 else []

    def active(self) -> bool:
        """The table exists (a cluster's marks, and maybe a partition)."""
        if not available():
            return False
        return _nft(["list", "table", "inet", self.table], check=False).returncode == 0

    def heal(self) -> bool:
        """Lift the partition (every drop rule); True if there was one."""
        if not self.rules():
            return False
        _nft(["flush", "chain", "inet", self.table, "partition"])
        return True

    def remove(self) -> bool:
        """Delete the table (a cluster stopped); True if there was one."""
        if not self.active():
            return False
        _nft(["delete", "table", "inet", self.table])
        return True

    def _apply(self, commands: list[str]) -> None:
        _nft(["-f", "-"], stdin="\n".join(commands) + "\n")


def _require() -> None:
    if not available():
        raise InfraError("partitions need nftables' nft: `msglab infra install` installs it")


def _gids(nodes: Sequence[Host]) -> list[int]:
    return sorted({h.gid for h in nodes if h.gid is not None})


def _who(host: Host) -> str:
    """The nftables match of the packets ``host``'s processes send (the clients: every process
    whose group is none a node may have)."""
    if host.gid is not None:
        return f"meta skgid {host.gid}"
    return f"meta skgid != {NODE_GROUPS}"


def _mark(host: Host) -> int:
    return host.gid if host.gid is not None else CLIENT_MARK


def _drops(src: Host, dst: Host) -> list[str]:
    """What ``src``'s processes send to ``dst``: to its address (a node's), and back on the
    connections ``dst`` opened."""
    who = _who(src)
    rules = [f"{who} ct direction reply ct mark {_mark(dst)} drop".strip()]
    if dst.gid is not None:  # the clients listen nowhere
        rules.insert(0, f"{who} ip daddr {dst.address} drop".strip())
    return rules


def _nft(
    args: list[str], stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise InfraError(f"nft {' '.join(args)} failed: {result.stderr.strip()}")
    return result
