"""``redis-sentinel``: a Redis primary, two replicas and three Redis Sentinels on 127.0.3.1-3.

Node ``n<i>`` is one host, 127.0.3.i, running two processes: a Redis server on the ``redis``
port and a Redis Sentinel (``redis-server sentinel.conf --sentinel``, the same Debian binary)
on the ``sentinel`` port, both binding that address only and both running with the node's
group id, its identity in ``netrules``' partitions. The node is its Redis server (``RedisNode``:
the single ``redis`` on a node's address); the Sentinel is a second process of the node
(``SentinelProcess``), started, stopped, killed and cut with it: a node killed or cut is a host
that crashed or lost its power, both processes die (``infra kill redis-sentinel/n1`` names both
PIDs). ``--lazyfs`` puts each node's Redis data on its lazy filesystem; the Sentinel keeps no
data.

Folders: ``<home>/redis-sentinel/n<i>/`` holds the Redis server's ``data/`` (its AOF),
``redis.conf`` and ``server.log``, and ``sentinel/`` the Sentinel's ``sentinel.conf``,
``server.log`` and ``server.pid``. Redis rewrites both config files itself (``CONFIG REWRITE``):
a Sentinel records there the epochs, the replicas and the other Sentinels it found and the
primary it follows, and when it reconfigures a Redis server it has that server rewrite its
``replicaof`` line, so that roles survive restarts as in production. msglab writes a config file
only when it is missing or was written for other ports (then the roles start over: n1 primary).

At the first start n1 is the primary and n2, n3 replicate it (``replicaof``); every Redis server
announces its own address to its primary (``replica-announce-ip``), keeps an append-only file
with the single ``redis``'s policy (``appendfsync`` from ``MSGLAB_REDIS_APPENDFSYNC``, ``always``
unless set; no RDB snapshots) and Redis's defaults otherwise: replication is asynchronous and
``min-replicas-to-write`` is 0, so a primary cut off from its replicas but not from its clients
keeps acknowledging writes, which are lost when it is made a replica again (Jepsen's Redis
analysis, 2013). Each Sentinel monitors the primary under the name ``msglab`` with a quorum of
2, ``down-after-milliseconds`` 2000 and ``failover-timeout`` 10000, and announces its own
address (``sentinel announce-ip``).

How the cluster is seen, without a client driver, over RESP (``probes.redis_call``): each
running Redis server answers ``ROLE`` (primary with its replicas, or replica of whom and whether
its link is up), each running Sentinel ``SENTINEL MASTER msglab`` (the primary it follows, its
config epoch, flags, how many replicas and other Sentinels it knows). ``primary`` is the node
the Sentinels name, the newest config epoch winning (a Sentinel cut off from the others keeps
naming the primary it lost). A status costs six small requests (a few milliseconds).

A client reaches the cluster through the Sentinels: the URL is
``redis+sentinel://127.0.3.1:26390,127.0.3.2:26390,127.0.3.3:26390/msglab``, every Sentinel's
``host:port`` then the master's name (the form of the ``redis-sentinel-url`` package; redis-py
has no URL for Sentinel: ``sentinel_url_parts`` splits it for ``redis.sentinel.Sentinel`` and
``master_for`` / ``slave_for``).
"""

from __future__ import annotations

import re
import signal
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NoReturn
from urllib.parse import urlsplit

from msglab.errors import InfraError, NotRunningError, PortInUseError, UsageError
from msglab.infra import probes, process
from msglab.infra.cluster import Cluster
from msglab.infra.lazyfs import CutReport
from msglab.infra.redis import Redis
from msglab.infra.service import Launch, NativeService, Starting, StartReport, Status

MASTER = "msglab"
QUORUM = 2
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 10_000
PROBE_TIMEOUT_S = 1.0
URL_SCHEME = "redis+sentinel"

PRIMARY = "primary"
REPLICA = "replica"
STALE_PRIMARY = "stale-primary"  # a Redis primary the Sentinels no longer name (cut off, back)
UNKNOWN = "unknown"  # running, but its Redis does not answer ROLE


def sentinel_url_parts(url: str) -> tuple[list[tuple[str, int]], str]:
    """``redis+sentinel://h1:p1,h2:p2/name`` -> ([(h1, p1), (h2, p2)], name)."""
    parts = urlsplit(url)
    master = parts.path.strip("/").split("/")[0]
    if parts.scheme != URL_SCHEME or not parts.netloc or not master:
        raise UsageError(f"{url!r} is not {URL_SCHEME}://host:port[,host:port...]/master")
    sentinels = []
    for address in parts.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"{url!r}: {address!r} is not host:port")
        sentinels.append((host, int(port)))
    return sentinels, master


@dataclass(frozen=True)
class Role:
    """A Redis server's ``ROLE``: a primary, or a replica of ``master`` (host:port) whose link
    is in ``link`` state (``connected`` once in sync)."""

    primary: bool
    master: str | None = None
    link: str | None = None


def redis_role(host: str, port: int) -> Role | None:
    """Ask ``ROLE``; None when the server does not answer as a primary or a replica does."""
    try:
        reply = probes.redis_call(host, port, PROBE_TIMEOUT_S, "ROLE")
    except ConnectionError:
        return None
    if not isinstance(reply, list) or not reply or isinstance(reply[0], probes.RespError):
        return None
    if reply[0] == "master":
        return Role(primary=True)
    if reply[0] == "slave" and len(reply) >= 4:
        return Role(primary=False, master=f"{reply[1]}:{reply[2]}", link=str(reply[3]))
    return None


def sentinel_master(host: str, port: int) -> dict[str, str] | None:
    """``SENTINEL MASTER msglab`` as a dict (``ip``, ``port``, ``flags``, ``config-epoch``,
    ``num-slaves``, ``num-other-sentinels`` ...); None when the Sentinel does not answer."""
    try:
        reply = probes.redis_call(host, port, PROBE_TIMEOUT_S, "SENTINEL", "MASTER", MASTER)
    except ConnectionError:
        return None
    if not isinstance(reply, list) or len(reply) % 2:
        return None
    return {str(k): str(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}


class SentinelProcess(NativeService):
    """The Redis Sentinel of one node: on the node's address, with the node's group id, in the
    node's folder (``sentinel/``); it keeps no data (its config file, which it rewrites, is
    all its state)."""

    keeps_data = False

    def __init__(self, node: RedisNode) -> None:
        super().__init__(node.settings, name=f"{node.name}/sentinel", host=node.host)
        self.node = node
        self.config_path = self.root / "sentinel.conf"

    @property
    def port(self) -> int:
        return self.settings.ports["sentinel"]

    @property
    def owned_ports(self) -> Mapping[str, int]:
        return {"sentinel": self.port}

    @property
    def url(self) -> str:
        return f"redis://{self.address}"

    def is_installed(self) -> bool:
        return self.node.is_installed()

    def install(self) -> None:
        self.node.install()

    def version(self) -> str | None:
        return self.node.version()

    def ping(self, timeout_s: float) -> bool:
        return probes.redis_ping(self.host, self.port, timeout_s)

    def prepare(self) -> bool:
        """Write ``sentinel.conf`` unless the Sentinel's own (rewritten) one fits these ports;
        True when written now."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            current = self.config_path.read_text()
        except OSError:
            current = None
        if current is not None and not self._stale(current):
            return False
        self.config_path.write_text(self._config())
        return True

    def _config(self) -> str:
        first = self.node.cluster.first
        return "\n".join(
            [
                f"# written by msglab for {self.name}; Redis Sentinel rewrites it",
                f"port {self.port}",
                f"bind {self.host}",
                "protected-mode no",
                "daemonize no",
                'logfile ""',
                f'dir "{self.root.resolve()}"',
                f"sentinel announce-ip {self.host}",
                f"sentinel announce-port {self.port}",
                f"sentinel monitor {MASTER} {first.host} {first.port} {QUORUM}",
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {MASTER} 1",
                # the replicas of the first start, known at once (a Sentinel finds replicas in
                # its primary's INFO, which it reads every 10 s: up to 10 s without them)
                *(
                    f"sentinel known-replica {MASTER} {svc.host} {svc.port}"
                    for svc in self.node.cluster.nodes.values()
                    if svc is not first
                ),
                "",
            ]
        )

    def _stale(self, config: str) -> bool:
        """Written for another port, or following a primary that is no node of the cluster."""
        port = re.search(r"^port (\d+)$", config, re.M)
        monitor = re.search(rf"^sentinel monitor {MASTER} (\S+) (\d+) \d+$", config, re.M)
        return (
            port is None
            or monitor is None
            or int(port.group(1)) != self.port
            or self.node.cluster.node_at(monitor.group(1), int(monitor.group(2))) is None
        )

    def launch(self) -> Launch:
        return Launch(["redis-server", str(self.config_path), "--sentinel"])

    def master(self) -> dict[str, str] | None:
        """What this Sentinel knows of the primary (``sentinel_master``)."""
        return sentinel_master(self.host, self.port)


class RedisNode(Redis):
    """One node of ``redis-sentinel``: its Redis server (the node's service: PID, data, log,
    status) and its Sentinel (``sentinel``), which lives and dies with it."""

    keeps_settings = True  # set_setting rewrites the node's configuration file

    def __init__(self, cluster: RedisSentinel, node: str, index: int, host: str) -> None:
        super().__init__(cluster.settings, name=f"{cluster.name}/{node}", host=host)
        self.cluster = cluster
        self.index = index
        self.config_path = self.root / "redis.conf"
        self.sentinel = SentinelProcess(self)

    @property
    def port(self) -> int:
        return self.settings.ports["redis"]

    @property
    def owned_ports(self) -> Mapping[str, int]:
        return {"redis": self.port, "sentinel": self.sentinel.port}

    def check_ports(self) -> None:
        """Both ports on the node's address, but the Sentinel's when this node's own Sentinel
        holds it."""
        ours = self.sentinel.pid() is not None
        for setting, port in self.owned_ports.items():
            if setting == "sentinel" and ours:
                continue
            if process.port_in_use(port, self.host):
                holder = process.port_holder(port, self.host)
                raise PortInUseError(setting, port, holder, host=self.host, server=self.name)

    def prepare(self) -> bool:
        fresh = super().prepare()
        try:
            current = self.config_path.read_text()
        except OSError:
            current = None
        if current is None or self._stale(current):
            self.config_path.write_text(self._config())
        return fresh

    def _config(self) -> str:
        """The role at the first start: n1 the primary, the others its replicas. Everything
        else is on the command line."""
        lines = [
            f"# written by msglab for {self.name}: its role at the first start. Redis rewrites",
            "# it when a Sentinel reconfigures this server, so that its role survives restarts.",
        ]
        first = self.cluster.first
        if first is not self:
            lines.append(f"replicaof {first.host} {first.port}")
        return "\n".join([*lines, ""])

    def _stale(self, config: str) -> bool:
        """A ``replicaof`` that is no node of the cluster (written for other ports)."""
        found = re.search(r"^replicaof (\S+) (\d+)$", config, re.M)
        return found is not None and self.cluster.node_at(found[1], int(found[2])) is None

    def launch(self) -> Launch:
        argv = list(super().launch().argv)
        return Launch(
            [
                argv[0],
                str(self.config_path),
                *argv[1:],
                "--replica-announce-ip",
                self.host,
                "--protected-mode",
                "no",
                "--repl-diskless-sync-delay",  # a full sync starts at once (default: waits 5 s
                "0",  # for more replicas to share it)
            ]
        )

    def role(self) -> Role | None:
        return redis_role(self.host, self.port)

    def set_setting(self, key: str, value: str) -> None:
        """``CONFIG SET`` and ``CONFIG REWRITE``: a node's configuration file is rewritten
        anyway whenever a Sentinel reconfigures it, so it is kept equal to what runs (a node
        restarted later neither loses a run's setting nor brings back one put back)."""
        super().set_setting(key, value)
        answer = self._cli("CONFIG", "REWRITE").strip()
        if answer != "OK":
            raise InfraError(f"{self.name} could not rewrite its configuration: {answer}")

    def begin(self, lazyfs: bool = False) -> Starting:
        """Spawn the Redis server and the Sentinel (each unless it runs); ready when both
        answer."""
        redis = super().begin(lazyfs)
        try:
            sentinel = self.sentinel.begin()
        except BaseException:
            redis.abort()
            raise
        return _HostStarting(redis, sentinel)

    def _stop(self) -> bool:
        """The Sentinel first (it would see its primary go), then the Redis server."""
        self.sentinel._stop()
        return super()._stop()

    def status(self) -> Status:
        """The Redis server's status; healthy when its Sentinel answers too."""
        status = super().status()
        healthy = status.healthy and self.sentinel.ping(min(self.settings.connect_timeout_s, 2))
        return replace(status, healthy=healthy)

    def kill(self) -> int:
        """SIGKILL both processes of the node, as a host crash; the first PID killed (the
        Redis server's when it ran). NotRunningError when neither runs."""
        victims = self.cluster.kill([self.name.rpartition("/")[2]])
        return victims[0][1]

    def power_cut(self) -> CutReport:
        """The host loses its power: the Sentinel is SIGKILLed (it keeps no data), the Redis
        server cut as a single server is."""
        self.check_cuttable()
        pid = self.sentinel.pid()
        if pid is not None:
            process.kill_hard(pid)
        self.sentinel.pid_path.unlink(missing_ok=True)
        report = super().power_cut()
        return report if pid is None else replace(report, killed=(*report.killed, pid))


class _HostStarting(Starting):
    """A node on its way up: its Redis server's ``Starting`` and its Sentinel's, ready when
    both are; a failure or an abort takes both down."""

    def __init__(self, redis: Starting, sentinel: Starting) -> None:
        super().__init__(redis.service, redis.spawned, redis.began, redis.cold)
        self.deadline = redis.deadline
        self.sentinel = sentinel

    def poll(self) -> bool:
        redis = super().poll()
        return self.sentinel.poll() and redis

    def time_out(self) -> NoReturn:
        if super().poll():
            self.sentinel.time_out()
        super().time_out()

    def done(self) -> StartReport:
        self.sentinel.done()
        return super().done()

    def abort(self) -> None:
        self.sentinel.abort()
        super().abort()


class RedisSentinel(Cluster[RedisNode]):
    """A Redis primary, two replicas and three Sentinels on 127.0.3.1-3 (see the module)."""

    name = "redis-sentinel"
    subnet = "127.0.3"

    def make_node(self, node: str, index: int, host: str) -> RedisNode:
        return RedisNode(self, node, index, host)

    @property
    def url(self) -> str:
        sentinels = ",".join(svc.sentinel.address for svc in self.nodes.values())
        return f"{URL_SCHEME}://{sentinels}/{MASTER}"

    def node_at(self, host: str, port: int) -> str | None:
        """The node whose Redis server is ``host:port``."""
        for node, svc in self.nodes.items():
            if (svc.host, svc.port) == (host, port):
                return node
        return None

    # -- how the cluster is seen ----------------------------------------------------------

    def views(self) -> dict[str, dict[str, str]]:
        """What each running Sentinel knows of the primary (``sentinel_master``), by node."""
        views = {}
        for node, svc in self.nodes.items():
            if svc.sentinel.pid() is not None and (view := svc.sentinel.master()) is not None:
                views[node] = view
        return views

    def primary(self, views: Mapping[str, Mapping[str, str]] | None = None) -> str | None:
        """The node the Sentinels name the primary: the newest config epoch wins, then the
        most Sentinels; None when no Sentinel answers (or names no node)."""
        if views is None:
            views = self.views()
        claims = Counter(
            (int(v.get("config-epoch", "0")), v.get("ip", ""), int(v.get("port", "0")))
            for v in views.values()
        )
        if not claims:
            return None
        (_, host, port), _ = max(claims.items(), key=lambda c: (c[0][0], c[1]))
        return self.node_at(host, port)

    def leader_of(self, name: str) -> tuple[str, str] | None:
        """The primary's node, whatever ``name`` is (one primary holds every key), and why;
        None when no Sentinel answers or names a node of the cluster."""
        views = self.views()
        node = self.primary(views)
        if node is None:
            return None
        epoch = max(int(v.get("config-epoch", "0")) for v in views.values())
        return node, (
            f"primary as the Sentinels name it ({len(views)} answered, config epoch {epoch}): "
            f"the one node that takes writes, {name}'s too"
        )

    def roles(self) -> dict[str, str | None]:
        """``primary``, ``replica``, or ``stale-primary`` (a Redis primary the Sentinels no
        longer name) per node, from each Redis server's ``ROLE``; None for a node down."""
        primary = self.primary()
        roles: dict[str, str | None] = {}
        for node, svc in self.nodes.items():
            role = svc.role() if svc.pid() is not None else None
            if svc.pid() is None:
                roles[node] = None
            elif role is None:
                roles[node] = UNKNOWN
            elif not role.primary:
                roles[node] = REPLICA
            else:
                roles[node] = PRIMARY if primary in (None, node) else STALE_PRIMARY
        return roles

    def missing(self, nodes: Sequence[str]) -> dict[str, str]:
        """A node has joined when its Redis server is the primary the Sentinels name, or a
        replica of it with its link up, and its Sentinel follows that primary, sees it up, and
        knows the two replicas and the two other Sentinels."""
        views = self.views()
        primary = self.primary(views)
        why = {}
        for node in nodes:
            svc = self.nodes[node]
            view = views.get(node)
            role = svc.role()
            if role is None:
                why[node] = f"its redis does not answer at {svc.address}"
            elif view is None:
                why[node] = f"its sentinel does not answer at {svc.sentinel.address}"
            elif (reason := self._unjoined(node, role, view, primary)) is not None:
                why[node] = reason
        return why

    def _unjoined(
        self, node: str, role: Role, view: Mapping[str, str], primary: str | None
    ) -> str | None:
        others = len(self.nodes) - 1
        named = f"{view.get('ip')}:{view.get('port')}"
        if primary is None:
            return "no sentinel names a node of the cluster the primary"
        address = self.nodes[primary].address
        if named != address:
            return f"its sentinel names {named} the primary, the newest epoch {address}"
        if view.get("flags") != "master":
            return f"its sentinel sees the primary {address} as {view.get('flags')}"
        if int(view.get("num-other-sentinels", "0")) < others:
            return (
                f"its sentinel knows {view.get('num-other-sentinels')} of {others} other sentinels"
            )
        if int(view.get("num-slaves", "0")) < others:
            return f"its sentinel knows {view.get('num-slaves')} of {others} replicas"
        if role.primary and node != primary:
            return f"its redis is a primary, the sentinels' primary is {address}"
        if not role.primary and (role.master != address or role.link != "connected"):
            return f"its redis replicates {role.master} ({role.link}), not the primary {address}"
        return None

    # -- a node is a host: both processes ----------------------------------------------------

    def processes(self, node: str) -> list[int]:
        """The node's Redis server and its Sentinel (a host's processes)."""
        svc = self.node(node)
        pids = [pid for proc in (svc, svc.sentinel) if (pid := proc.pid()) is not None]
        return [*pids, *(child for pid in pids for child in process.descendants(pid))]

    def kill(self, nodes: Iterable[str] | None = None) -> list[tuple[str, int]]:
        """SIGKILL every process of the named nodes (each Redis server and its Sentinel) at
        once; each killed with its PID."""
        picked = self._pick(nodes)
        victims = [
            (proc.name, pid)
            for svc in picked.values()
            for proc in (svc, svc.sentinel)
            if (pid := proc.pid()) is not None
        ]
        if not victims:
            raise NotRunningError(f"{self._label(picked)}: not running; nothing to kill")
        for _, pid in victims:
            process.send(pid, signal.SIGKILL)
        for _, pid in victims:
            process.crash(pid)
        return victims

    def power_cut(self, nodes: Iterable[str] | None = None) -> list[CutReport]:
        """Every Sentinel of the named nodes frozen too before the cuts begin."""
        picked = self._pick(nodes)
        for svc in picked.values():
            svc.check_cuttable()
        for svc in picked.values():
            if (pid := svc.sentinel.pid()) is not None:
                process.send(pid, signal.SIGSTOP)
        return super().power_cut(nodes)

    def logs(self, nodes: Iterable[str] | None = None, lines: int = 40) -> str:
        """Each node's Redis server's log, then its Sentinel's."""
        procs: list[NativeService] = [
            p for svc in self._pick(nodes).values() for p in (svc, svc.sentinel)
        ]
        if not any(p.log_path.exists() for p in procs):
            raise NotRunningError(f"{self.name} has no log yet; run `msglab infra up {self.name}`")
        return "\n".join(
            f"==> {p.name} ({p.log_path}) <==\n{process.log_tail(p.log_path, lines)}" for p in procs
        )
