"""Settings a run can turn (``msglab run --set KEY=VALUE``), read back into the report.

A knob has a kind. A *server* knob is a server setting that decides durability: applied for the
run, read back from the server, and put back after. A *client* knob is a setting of the run's
clients (``ClientConfig``): each worker is given it; it is read back from what the clients
really use (Kafka's ``acks``: the producer settings the transport builds) or from what the
server reports of them (RabbitMQ's ``queue-type``: the type of the run's queues, as RabbitMQ
lists them). A knob applies to the runs of some transports (and patterns); ``--set`` of a knob
of another transport is refused.

msglab sets only servers it owns (a server given by ``MSGLAB_<SERVICE>_URL`` is someone else's
to configure). What the report's ``settings`` say is read from the servers and clients the run
used, never taken from msglab's defaults.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msglab.brokers import CLUSTER_OF, SERVICE_OF, transport_class
from msglab.config import ACKS, QUEUE_TYPES, ClientConfig
from msglab.errors import InfraError, MsglabError, UsageError
from msglab.infra.cluster import Cluster
from msglab.infra.native import CLUSTER_TYPES, NativeBackend
from msglab.infra.rabbitmq import RabbitMQ
from msglab.infra.service import NativeService
from msglab.profiles import DeliveryProfile
from msglab.settings import Settings, env_name

if TYPE_CHECKING:
    from msglab.lab.scenario import Scenario

LONG_MAX = 2**63 - 1  # Kafka's Long.MAX_VALUE: the largest count a broker setting takes
_INTEGER = re.compile(r"[0-9]{1,30}")


@dataclass(frozen=True)
class Knob:
    """``key`` of ``service``: one of ``values``, or an integer from ``minimum`` (when set).

    kind: ``server`` (set on the server by ``Dials``) or ``client`` (given to the run's clients
    as ClientConfig's ``config_field``). read_from: where the report's value comes from,
    ``server`` (the server's setting), ``client`` (``client_settings`` of the transport's class:
    what its clients are built with) or ``queues`` (the run's queues, as RabbitMQ reports them).
    transports, patterns: the runs it applies to (empty: every one); cluster_only: runs with
    ``--cluster`` only (a setting of replicas, which a single server has not).
    """

    key: str
    service: str
    values: tuple[str, ...]
    does: str
    kind: str = "server"
    minimum: int | None = None
    transports: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    config_field: str = ""
    read_from: str = "server"
    cluster_only: bool = False

    @property
    def choices(self) -> str:
        """The valid values as ``--help`` shows them: ``always|everysec|no``, ``default|N>=1``."""
        return "|".join([*self.values, *([f"N>={self.minimum}"] if self.minimum else [])])

    def check(self, value: str) -> str:
        """``value`` as the knob takes it (an integer without leading zeros); UsageError listing
        what is valid."""
        if value in self.values:
            return value
        number = int(value) if _INTEGER.fullmatch(value) else None
        if self.minimum is not None and number is not None and self.minimum <= number <= LONG_MAX:
            return str(number)
        valid = ", ".join(self.values)
        if self.minimum is not None:
            integer = f"an integer from {self.minimum} to {LONG_MAX}"
            valid = f"{valid}, or {integer}" if valid else integer
        raise UsageError(f"--set {self.key}: unknown value {value!r}; valid: {valid}")

    def applies(self, transport: str, pattern: str = "direct", cluster: bool = False) -> bool:
        return self.refusal(transport, pattern, cluster) is None

    def refusal(self, transport: str, pattern: str, cluster: bool = False) -> str | None:
        """Why ``--set`` of this knob does not apply to a run of ``transport`` and ``pattern``
        (on its cluster with ``cluster``)."""
        if self.transports and transport not in self.transports:
            return (
                f"--set {self.key} applies to runs of {' and '.join(self.transports)} "
                f"(-t {self.transports[0]}), not {transport}"
            )
        if self.patterns and pattern not in self.patterns:
            return (
                f"--set {self.key} applies to the patterns {', '.join(self.patterns)}, not "
                f"{pattern} (its messages are not published by msglab's producers)"
            )
        if self.cluster_only and not cluster:
            return (
                f"--set {self.key} is a setting of replicas: it applies to runs with --cluster "
                f"(a single {self.service} has none)"
            )
        return None


KNOBS: dict[str, Knob] = {
    k.key: k
    for k in (
        Knob(
            "appendfsync",
            "redis",
            ("always", "everysec", "no"),
            "Redis AOF: fsync every write, once a second, or never (the OS decides)",
            transports=("redis-streams", "redis-pubsub"),
        ),
        Knob(
            "synchronous_commit",
            "postgres",
            ("on", "off"),
            "PostgreSQL: a commit returns after its WAL is flushed (on) or before (off)",
        ),
        Knob(
            "log.flush.interval.messages",
            "kafka",
            ("default",),
            "Kafka broker: fsync a partition's log once this many messages were appended to it "
            "(default: never, the OS writes the page cache back when it likes)",
            minimum=1,
            transports=("kafka",),
        ),
        Knob(
            "min.insync.replicas",
            "kafka",
            ("default",),
            "Kafka: the in-sync replicas (the leader's included) a write needs before acks=all "
            "confirms it; fewer in sync and the partition refuses writes (the cluster's: 2)",
            minimum=1,
            transports=("kafka",),
            cluster_only=True,
        ),
        Knob(
            "unclean.leader.election.enable",
            "kafka",
            ("true", "false", "default"),
            "Kafka: with no in-sync replica left, a replica out of sync may lead (true: the "
            "partition stays available and loses what that replica lacked)",
            transports=("kafka",),
            cluster_only=True,
        ),
        Knob(
            "eligible.leader.replicas.version",
            "kafka",
            ("0", "1"),
            "Kafka (KIP-966, on in 4.1): 1, a replica that left the ISR with the whole "
            "committed log stays eligible to lead (Eligible Leader Replicas); 0, off",
            transports=("kafka",),
            cluster_only=True,
        ),
        Knob(
            "min-replicas-to-write",
            "redis",
            ("0",),
            "Redis: the primary refuses writes unless this many replicas answered within "
            "min-replicas-max-lag seconds (0: never refuses)",
            minimum=1,
            transports=("redis-streams", "redis-pubsub"),
            cluster_only=True,
        ),
        Knob(
            "min-replicas-max-lag",
            "redis",
            (),
            "Redis: seconds since a replica's last answer after which it no longer counts "
            "for min-replicas-to-write (default 10)",
            minimum=1,
            transports=("redis-streams", "redis-pubsub"),
            cluster_only=True,
        ),
        Knob(
            "wait",
            "redis",
            ("0",),
            "Redis producer: WAIT until this many replicas have each pipelined chunk of writes "
            "(at most 5 s); writes fewer replicas acknowledged count as unknown, not confirmed",
            kind="client",
            minimum=1,
            transports=("redis-streams", "redis-pubsub"),
            config_field="wait_replicas",
            read_from="client",
            cluster_only=True,
        ),
        Knob(
            "acks",
            "kafka",
            ACKS,
            "Kafka producer: a send is confirmed without an answer (0), once the partition's "
            "leader wrote it (1), or once every in-sync replica has (all)",
            kind="client",
            transports=("kafka",),
            patterns=("direct", "dual-write", "publish-then-commit", "outbox"),
            config_field="acks",
            read_from="client",
        ),
        Knob(
            "queue-type",
            "rabbitmq",
            QUEUE_TYPES,
            "RabbitMQ: the consumers' queues are classic (durable under at-least-once) or "
            "quorum (a replicated log, always durable)",
            kind="client",
            transports=("rabbitmq",),
            config_field="queue_type",
            read_from="queues",
        ),
    )
}


def parse(
    pairs: Iterable[str],
    transport: str | None = None,
    pattern: str = "direct",
    cluster: bool = False,
) -> dict[str, str]:
    """``["appendfsync=no", ...]`` as a dict; UsageError naming the valid keys or values, or,
    given the run's ``transport``, ``pattern`` and ``cluster``, the runs a knob applies to."""
    chosen: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise UsageError(f"--set {pair!r}: use KEY=VALUE, e.g. appendfsync=no")
        if key not in KNOBS:
            raise UsageError(f"--set: unknown setting {key!r}; valid: {', '.join(KNOBS)}")
        chosen[key] = KNOBS[key].check(value)
        refused = KNOBS[key].refusal(transport, pattern, cluster) if transport else None
        if refused:
            raise UsageError(refused)
    return chosen


def client_fields(pairs: Iterable[str]) -> dict[str, str]:
    """The ClientConfig fields the client knobs of ``pairs`` set (``{"acks": "1"}``): what each
    worker of the run is given."""
    return _client_fields(parse(pairs))


def _client_fields(chosen: dict[str, str]) -> dict[str, str]:
    return {KNOBS[k].config_field: v for k, v in chosen.items() if KNOBS[k].kind == "client"}


def server_settings(
    settings: Settings, services: Iterable[str] | None = None
) -> dict[str, dict[str, str]]:
    """``{"redis": {"appendfsync": "always"}, "kafka-cluster": {...}, ...}``: every server
    knob (of ``services``; all when None) as msglab's own servers answer now; ``not running``
    for a server that is down, ``external (not read)`` for one given by URL. The clusters of
    those services are listed when they run, with their knobs (those of replicas too)."""
    native = NativeBackend(settings)
    wanted = None if services is None else set(services)
    keys: dict[str, list[str]] = {}  # server or cluster -> its knobs' keys
    for knob in KNOBS.values():
        if knob.kind != "server" or (wanted is not None and knob.service not in wanted):
            continue
        if not knob.cluster_only:
            keys.setdefault(knob.service, []).append(knob.key)
        for name in {CLUSTER_OF[t] for t in knob.transports if t in CLUSTER_OF}:
            keys.setdefault(name, []).append(knob.key)
    found: dict[str, dict[str, str]] = {}
    for name, names in keys.items():
        if name in CLUSTER_TYPES:
            cluster = native.cluster(name)
            if any(node.pid() for node in cluster.nodes.values()):
                found[name] = _read(cluster, names)
        elif name in settings.external:
            found[name] = dict.fromkeys(names, "external (not read)")
        elif (server := native.service(name)).pid() is None:
            found[name] = dict.fromkeys(names, "not running")
        else:
            found[name] = _read(server, names)
    return found


def _read(server: NativeService | Cluster[Any], keys: list[str]) -> dict[str, str]:
    """``keys`` as ``server`` answers them, at once; each ``unknown (why)`` when it cannot."""
    try:
        return server.read_settings(keys)
    except MsglabError as exc:
        return dict.fromkeys(keys, f"unknown ({exc})")


class Dials:
    """The knobs of one run: ``apply`` sets its server knobs on msglab's servers (remembering
    what was there), ``reapply`` sets a restarted server's again, ``restore`` puts them back;
    ``read_back`` reads every knob that applies to the run, from its servers and clients, and
    ``read_queues`` the one RabbitMQ reports of the run's queues, once they exist."""

    def __init__(self, settings: Settings, scenario: Scenario) -> None:
        self._settings = settings
        self._native = NativeBackend(settings)
        self._scenario = scenario
        chosen = parse(scenario.sets, scenario.transport, scenario.pattern, scenario.cluster)
        self._chosen = {k: v for k, v in chosen.items() if KNOBS[k].kind == "server"}
        self.clients = _client_fields(chosen)  # given to every worker of the run
        self._before: dict[str, str] = {}
        targets = {self._server(KNOBS[k])[0] for k in self._chosen}
        external = sorted(targets & set(settings.external))
        if external:
            variable = f"MSGLAB_{env_name(external[0])}_URL"
            raise UsageError(
                f"--set changes msglab's own servers, and {', '.join(external)} is external "
                f"({variable}): configure it where it runs"
            )

    def _server(self, knob: Knob) -> tuple[str, NativeService | Cluster[Any]]:
        """Where ``knob`` is set for this run, and its name: the run's cluster for a knob of
        its broker (every node; Kafka's: once, cluster-wide), else msglab's own server."""
        s = self._scenario
        if s.cluster and knob.service == SERVICE_OF[s.transport]:
            return str(s.service), self._native.cluster(str(s.service))
        return knob.service, self._native.service(knob.service)

    def apply(self) -> None:
        for key, value in self._chosen.items():
            _, server = self._server(KNOBS[key])
            self._before[key] = server.saved_setting(key)
            server.set_setting(key, value)

    def reapply(self, service: str) -> None:
        """After ``service`` (a server or a cluster) restarted, if it forgets run-time
        settings."""
        for key, value in self._chosen.items():
            name, server = self._server(KNOBS[key])
            if name == service and not server.keeps_settings:
                server.set_setting(key, value)

    def restore(self) -> None:
        """Put back what ``apply`` changed, every one tried; InfraError naming what is left
        (a server that keeps settings across restarts, as Kafka does, keeps it)."""
        left = []
        for key, value in self._before.items():
            name, server = self._server(KNOBS[key])
            try:
                server.set_setting(key, value)
            except MsglabError as exc:
                left.append(f"{name} {key} (was {value}): {exc}")
        if left:
            raise InfraError(
                "--set could not be put back: " + "; ".join(left) + ". `msglab profiles` shows "
                "what is in force; a run with --set KEY=<the old value> puts it back"
            )

    def _applying(self, read_from: str) -> list[Knob]:
        s = self._scenario
        return [
            k
            for k in KNOBS.values()
            if k.read_from == read_from and k.applies(s.transport, s.pattern, s.cluster)
        ]

    def read_back(self, services: Iterable[str]) -> dict[str, str]:
        """``{"redis.appendfsync": "no", "kafka.acks": "all", ...}``: every knob that applies to
        the run, of ``services``: server knobs as msglab's own servers answer (an external
        server's is not read), client knobs as the transport builds its clients for the run.
        The knobs RabbitMQ reports of the run's queues are ``read_queues``'."""
        found: dict[str, str] = {}
        services = set(services)
        by_server: dict[str, tuple[NativeService | Cluster[Any], list[Knob]]] = {}
        for knob in self._applying("server"):
            name, server = self._server(knob)
            if name in services and knob.service not in self._settings.external:
                by_server.setdefault(name, (server, []))[1].append(knob)
        for server, knobs in by_server.values():
            values = _read(server, [k.key for k in knobs])
            found |= {f"{k.service}.{k.key}": values[k.key] for k in knobs}
        client = self._applying("client")
        if client:
            cls = transport_class(self._scenario.transport)
            profile = DeliveryProfile.parse(self._scenario.profile)
            config = ClientConfig(url="", profile=profile).with_fields(self.clients)
            read: Callable[[ClientConfig], dict[str, str]] | None
            read = getattr(cls, "client_settings", None)  # optional (ports.Transport)
            built = read(config) if read is not None else {}
            for knob in client:
                found[f"{knob.service}.{knob.key}"] = built.get(knob.key, "unknown")
        return found

    def read_queues(self, topic: str) -> dict[str, str]:
        """``{"rabbitmq.queue-type": "classic"}``: the type of the run's queues (those named
        after its ``topic``) as msglab's own RabbitMQ lists them (several, comma-separated,
        if they differ); nothing for an external RabbitMQ."""

        def types() -> str:
            try:
                if self._scenario.cluster:  # each node lists the queues it leads
                    nodes = self._native.cluster(str(self._scenario.service)).nodes.values()
                    queues = [q for node in nodes if node.pid() for q in node.queues()]
                else:
                    queues = RabbitMQ(self._settings).queues()
            except MsglabError as exc:
                return f"unknown ({exc})"
            mine = sorted({q.type for q in queues if q.name.startswith(topic)})
            return ", ".join(mine) or f"unknown (no queue named {topic}...)"

        return {
            f"{knob.service}.{knob.key}": types()
            for knob in self._applying("queues")
            if knob.service not in self._settings.external
        }
