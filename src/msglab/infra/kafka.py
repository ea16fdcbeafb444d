"""Apache Kafka 4 in KRaft mode, run from Maven Central jars: ``kafka`` is one combined broker +
controller (node 1); ``kafka2`` is an on-demand second broker (node 2, broker only) that joins
node 1's controller, for the scaling probe.

The jars come from ``resources/kafka/pom.xml`` via ``mvn dependency:copy-dependencies`` into
``<cache>/kafka-<version>/lib`` (shared by every MSGLAB_HOME); the broker runs with
``java -cp 'lib/*' kafka.Kafka server.properties``. Kafka never fsyncs by default: a SIGKILL
keeps what reached the page cache, a power cut would not.

Client quotas (``set_producer_quota``) are set with Kafka's own ConfigCommand; the brokers
measure a client's rate over 2 windows of 1 s, so a quota holds after about 1 s, not 10.
Broker settings (``setting`` / ``set_setting``: ``log.flush.interval.messages``) too, as
cluster-wide dynamic configs (``--entity-default``), read back from the broker itself
(``--entity-name <node id> --describe --all``). Kafka keeps dynamic configs in its KRaft
metadata, across restarts: ``set_setting(key, "default")`` deletes one.

Clients use the PLAINTEXT listener on the ``kafka`` port. A second listener, PROXIED on
``kafka_proxied``, is Toxiproxy's upstream and advertises the proxy's address (``kafka_proxy``):
a broker answers metadata requests with the addresses of the listener the request came in on,
so a client that bootstraps through the proxy reconnects through it too.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from msglab.errors import InfraError, InstallError, NotRunningError, ServerStartError, UsageError
from msglab.infra import probes
from msglab.infra.service import Launch, NativeService, apt_install

KAFKA_VERSION = "4.2.2"
JAVA_OPTS = ("-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true")
# Kafka's command-line tools start faster, and take less CPU, on the quick compiler alone
TOOL_JAVA_OPTS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
BROKER_SETTINGS = (
    "log.flush.interval.messages",
    "min.insync.replicas",
    "unclean.leader.election.enable",
)
"""The dynamic broker configs msglab reads and sets (``setting``, ``set_setting``)."""
ELR_FEATURE = "eligible.leader.replicas.version"  # KIP-966: 1 on, 0 off
FEATURES = (ELR_FEATURE,)
"""The cluster features msglab reads and sets like settings (a finalized level, 0 when off)."""
DEFAULT = "default"  # a broker setting Kafka takes from its own defaults (no config set)
TOOL_TIMEOUT_S = 60.0
SETTLE_S = 15.0  # how long a dynamic config may take to reach the broker
# a line of ConfigCommand's --describe: "  key=value sensitive=false synonyms={SOURCE:key=v, ...}"
_DESCRIBED = re.compile(
    r"^  (?P<key>[\w.]+)=(?P<value>\S*) sensitive=\w+ synonyms=\{(?P<syn>.*)\}$"
)


def _pom() -> bytes:
    return resources.files("msglab.infra").joinpath("resources/kafka/pom.xml").read_bytes()


def _log4j2() -> str:
    return resources.files("msglab.infra").joinpath("resources/kafka/log4j2.properties").read_text()


def new_cluster_id() -> str:
    while True:  # 22-char URL-safe base64 of 16 random bytes, not starting with '-'
        cid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


COMMON_SETTINGS = (
    "controller.listener.names=CONTROLLER",
    "inter.broker.listener.name=PLAINTEXT",
    "num.partitions=1",
    "group.initial.rebalance.delay.ms=0",
    # After a SIGKILL the restarted broker cannot register until the controller
    # expires the old session (default 9 s): shorter, a restart takes ~6 s, not 13.
    "broker.session.timeout.ms=3000",
    "broker.heartbeat.interval.ms=1000",
    "auto.create.topics.enable=true",
    # A quota'd client's rate over 2 windows of 1 s (default 11): a burst of ~1 s, not 10.
    "quota.window.num=2",
    "quota.window.size.seconds=1",
)
"""What every msglab broker shares (the single node, kafka2 and the cluster's nodes)."""

ONE_REPLICA = (
    "offsets.topic.replication.factor=1",
    "transaction.state.log.replication.factor=1",
    "transaction.state.log.min.isr=1",
    "share.coordinator.state.topic.replication.factor=1",
    "share.coordinator.state.topic.min.isr=1",
)
"""One replica of every internal topic: the single node (Kafka's defaults, 3, hang there)."""


def broker_properties(node: list[str], replication: tuple[str, ...] = ONE_REPLICA) -> str:
    """A node's own lines plus what every msglab broker shares, and its replication settings."""
    return "\n".join([*node, *COMMON_SETTINGS, *replication, ""])


class Kafka(NativeService):
    keeps_settings = True  # dynamic configs and features live in the cluster's metadata
    name = "kafka"
    node_id = 1
    java_opts: tuple[str, ...] = JAVA_OPTS

    @property
    def controller_port(self) -> int:
        return self.settings.ports["kafka_controller"]

    @property
    def proxied_port(self) -> int:
        return self.settings.ports["kafka_proxied"]

    @property
    def owned_ports(self) -> Mapping[str, int]:
        return {
            "kafka": self.port,
            "kafka_controller": self.controller_port,
            "kafka_proxied": self.proxied_port,
        }

    @property
    def url(self) -> str:
        return self.address  # a bootstrap.servers value

    @property
    def lib_dir(self) -> Path:
        return self.settings.cache / f"kafka-{KAFKA_VERSION}" / "lib"

    def _lib_stamp(self) -> Path:
        return self.lib_dir.parent / "pom.sha256"

    def is_installed(self) -> bool:
        stamp = self._lib_stamp()
        return (
            shutil.which("java") is not None
            and stamp.exists()
            and stamp.read_text().strip() == hashlib.sha256(_pom()).hexdigest()
        )

    def install(self) -> None:
        if shutil.which("java") is None:
            apt_install(["openjdk-17-jre-headless"])
        if shutil.which("mvn") is None:
            apt_install(["maven"])
        target = self.lib_dir.parent
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target) as tmp:
            pom = Path(tmp) / "pom.xml"
            pom.write_bytes(_pom())
            lib = Path(tmp) / "lib"
            argv = [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={lib}",
                "-DincludeScope=runtime",
            ]
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
            if result.returncode != 0 or not any(lib.glob("kafka_2.13-*.jar")):
                tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
                raise InstallError(
                    f"resolving Kafka {KAFKA_VERSION} jars with Maven failed:\n{tail}"
                )
            shutil.rmtree(self.lib_dir, ignore_errors=True)
            lib.rename(self.lib_dir)
        self._lib_stamp().write_text(hashlib.sha256(_pom()).hexdigest() + "\n")

    def _properties(self) -> str:
        return broker_properties(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers={self.host}:{self.controller_port}",
                f"listeners=PLAINTEXT://{self.host}:{self.port},"
                f"CONTROLLER://{self.host}:{self.controller_port},"
                f"PROXIED://{self.host}:{self.proxied_port}",
                f"advertised.listeners=PLAINTEXT://{self.host}:{self.port},"
                f"CONTROLLER://{self.host}:{self.controller_port},"
                f"PROXIED://{self.host}:{self.settings.ports['kafka_proxy']}",
                "listener.security.protocol.map="
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT",
                f"log.dirs={self.data_dir.resolve()}",
            ]
        )

    def prepare(self) -> bool:
        self._write_config()
        if (self.data_dir / "meta.properties").exists():
            return False
        self._format(new_cluster_id(), "--standalone")
        return True

    def _write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "server.properties").write_text(self._properties())
        (self.root / "log4j2.properties").write_text(_log4j2())

    def _tool(self, main_class: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one of Kafka's own command-line tools from the broker's jars."""
        argv = ["java", *TOOL_JAVA_OPTS, "-cp", f"{self.lib_dir}/*", *self._log_opts()]
        argv += [main_class, *args]
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, check=False, timeout=TOOL_TIMEOUT_S
            )
        except subprocess.TimeoutExpired as exc:
            raise InfraError(
                f"{main_class} {' '.join(args)}: no answer in {exc.timeout:g} s"
            ) from exc

    def _format(self, cluster_id: str, *options: str) -> None:
        config = str(self.root / "server.properties")
        result = self._tool(
            "kafka.tools.StorageTool", "format", *options, "-g", "-t", cluster_id, "-c", config
        )
        if result.returncode != 0:
            raise ServerStartError(
                f"formatting {self.name}'s KRaft storage failed",
                (result.stdout + result.stderr)[-3000:],
            )

    def cluster_id(self) -> str | None:
        """The cluster id this node's storage was formatted with (None before the first start)."""
        try:
            meta = (self.data_dir / "meta.properties").read_text()
        except OSError:
            return None
        for line in meta.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id":
                return value.strip()
        return None

    def hosted_partitions(self, topic: str) -> list[int]:
        """The partitions of ``topic`` whose log this broker keeps (with one replica: leads)."""
        found = []
        for entry in self.data_dir.glob(f"{topic}-*"):
            number = entry.name.removeprefix(f"{topic}-")
            if number.isdigit():
                found.append(int(number))
        return sorted(found)

    def set_producer_quota(self, client_id: str, bytes_per_s: int | None) -> None:
        """Cap what producers with ``client_id`` may write to *each* broker (None: remove the
        cap, if any), with Kafka's ConfigCommand; a broker throttles a client above its quota."""
        change = (
            ["--delete-config", "producer_byte_rate"]
            if bytes_per_s is None
            else ["--add-config", f"producer_byte_rate={bytes_per_s}"]
        )
        result = self._tool(
            "kafka.admin.ConfigCommand",
            *("--bootstrap-server", self.address, "--alter", *change),
            *("--entity-type", "clients", "--entity-name", client_id),
        )
        why = _last_line(result)
        if result.returncode != 0 and not (bytes_per_s is None and "Invalid config" in why):
            raise InfraError(f"setting the producer quota of {client_id!r} failed: {why}")

    def setting(self, key: str) -> str:
        """The value of broker setting ``key`` in force on this broker, as it describes its own
        configuration: ``default`` when no config sets it (Kafka's default; for
        ``log.flush.interval.messages``, Long.MAX_VALUE: never force a flush), else the value
        in force (from a dynamic config, the cluster's or this broker's, or the static file).
        A feature (``FEATURES``): its finalized level, as the broker lists it."""
        return self.read_settings([key])[key]

    def read_settings(self, keys: Sequence[str]) -> dict[str, str]:
        """``setting`` of each of ``keys``: the configs from one description of the broker,
        the features from one ApiVersions answer."""
        for key in keys:
            _check_broker_setting(key)
        found: dict[str, str] = {}
        if any(key in FEATURES for key in keys):
            timeout_s = self.settings.connect_timeout_s
            levels = probes.kafka_features(self.host, self.port, timeout_s)
            if levels is None:
                raise NotRunningError(f"{self.name} does not answer at {self.address}")
            found |= {key: str(levels.get(key, 0)) for key in keys if key in FEATURES}
        configs = [key for key in keys if key not in FEATURES]
        if configs:
            described = self._described()
            found |= {key: described[key][0] for key in configs}
        return {key: found[key] for key in keys}

    def saved_setting(self, key: str) -> str:
        """What ``set_setting(key, ...)`` puts back as it is now: the cluster-wide dynamic
        config's value, or ``default`` when there is none (the static file's or Kafka's own
        value is then in force, and stays)."""
        if key in FEATURES:
            return self.setting(key)
        value, sources = self._described()[key]
        return value if sources[:1] == ["DYNAMIC_DEFAULT_BROKER_CONFIG"] else DEFAULT

    def _described(self) -> dict[str, tuple[str, list[str]]]:
        """Each of ``BROKER_SETTINGS``, as one description of this broker (one JVM tool run)
        gives it: the value in force (``default`` from Kafka's defaults) and the sources that
        set it, first the one in force (``DYNAMIC_DEFAULT_BROKER_CONFIG`` ...)."""
        if not self.ping(min(self.settings.connect_timeout_s, 5.0)):
            raise NotRunningError(f"{self.name} does not answer at {self.address}")
        result = self._configs("--entity-name", str(self.node_id), "--describe", "--all")
        described = {}
        for line in result.stdout.splitlines():
            found = _DESCRIBED.match(line)
            if found and found["key"] in BROKER_SETTINGS:
                sources = [s.partition(":")[0] for s in found["syn"].split(", ") if s]
                value = DEFAULT if sources[:1] == ["DEFAULT_CONFIG"] else found["value"]
                described[found["key"]] = (value, sources)
        missing = [key for key in BROKER_SETTINGS if key not in described]
        if missing:
            raise InfraError(f"{self.name} did not describe {missing[0]}: {_last_line(result)}")
        return described

    def set_setting(self, key: str, value: str) -> None:
        """Set ``key`` for every broker of the cluster (a cluster-wide dynamic config), or
        delete that config for ``default``; then wait until this broker has it in force (it
        comes through the KRaft metadata). Kafka keeps it across restarts. A feature: finalize
        it at level ``value`` (UpdateFeatures: an upgrade, or a safe downgrade)."""
        _check_broker_setting(key)
        if key in FEATURES:
            timeout_s = self.settings.connect_timeout_s
            why = probes.kafka_update_feature(self.host, self.port, timeout_s, key, int(value))
            if why:
                raise InfraError(f"setting {key}={value} on {self.name} failed: {why}")
        else:
            change = (
                ["--delete-config", key] if value == DEFAULT else ["--add-config", f"{key}={value}"]
            )
            result = self._configs("--entity-default", "--alter", *change)
            why = _last_line(result)
            if result.returncode != 0 and not (value == DEFAULT and "Invalid config" in why):
                raise InfraError(f"setting {key}={value} on {self.name} failed: {why}")
        deadline = time.monotonic() + SETTLE_S
        while (now := self.saved_setting(key)) != value:
            if time.monotonic() > deadline:
                raise InfraError(
                    f"{self.name} has not taken {key}={value} {SETTLE_S:g} s after the cluster's "
                    f"was set (it has {self.setting(key)}: a config of broker {self.node_id} "
                    f"itself overrides it?; cluster-wide: {now})"
                )
            time.sleep(0.5)

    def _configs(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Kafka's ConfigCommand (``kafka-configs.sh``) on this broker's brokers entity."""
        return self._tool(
            "kafka.admin.ConfigCommand",
            *("--bootstrap-server", self.address, "--entity-type", "brokers", *args),
        )

    def _log_opts(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.root / 'logs'}",
        ]

    def launch(self) -> Launch:
        return Launch(
            [
                "java",
                *self.java_opts,
                *self._log_opts(),
                "-cp",
                f"{self.lib_dir}/*",
                "kafka.Kafka",
                str(self.root / "server.properties"),
            ]
        )

    def ping(self, timeout_s: float) -> bool:
        return probes.kafka_api_versions(self.host, self.port, timeout_s)

    def version(self) -> str | None:
        return KAFKA_VERSION


def _check_broker_setting(key: str) -> None:
    if key not in (*BROKER_SETTINGS, *FEATURES):
        valid = ", ".join((*BROKER_SETTINGS, *FEATURES))
        raise UsageError(f"kafka has no setting {key!r} msglab sets; valid: {valid}")


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[-1] if lines else f"exit {result.returncode}"


class Kafka2(Kafka):
    """A second broker (node 2, broker only) that joins ``kafka``'s controller: started by name
    only (``msglab infra up kafka kafka2``), for the scaling probe. Its storage is formatted with
    node 1's cluster id, and formatted again when node 1's storage was made anew."""

    name = "kafka2"
    node_id = 2

    @property
    def owned_ports(self) -> Mapping[str, int]:
        return {"kafka2": self.port}

    def _properties(self) -> str:
        return broker_properties(
            [
                "process.roles=broker",
                "node.id=2",
                f"controller.quorum.bootstrap.servers={self.host}:{self.controller_port}",
                f"listeners=PLAINTEXT://{self.host}:{self.port}",
                f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.data_dir.resolve()}",
            ]
        )

    def prepare(self) -> bool:
        first = Kafka(self.settings)
        cluster = first.cluster_id()
        if first.pid() is None or cluster is None:
            raise ServerStartError(
                "kafka2 joins the controller of kafka (node 1), which is not running: "
                "start both (`msglab infra up kafka kafka2`)"
            )
        self._write_config()
        if self.cluster_id() == cluster:
            return False
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self._format(cluster)
        return True
