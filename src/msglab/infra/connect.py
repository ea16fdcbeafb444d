"""Apache Kafka Connect (one distributed worker) with the Debezium PostgreSQL connector plugin.

Installed from Maven Central with ``resources/connect/pom.xml``: ``connect-runtime`` at the
broker's Kafka version (plus log4j2) into ``<cache>/connect-<kafka>-debezium-<v>/lib`` (the
worker's classpath, kept apart from the broker's lib folder: other jetty/jackson versions), and
the Debezium plugin archive unpacked into ``.../plugins`` (the worker's ``plugin.path``; the
connector and its outbox ``EventRouter`` SMT load in their own class loader, never from the
classpath). Run with ``java -cp 'lib/*' org.apache.kafka.connect.cli.ConnectDistributed
worker.properties``; ready when ``GET /connectors`` answers 200.

The worker needs Kafka (its configs, offsets and status live in three RF-1 topics) and, for its
connectors, PostgreSQL: ``up`` refuses to start it while either does not answer, naming them.
Its own folder holds only config and logs: the state is in Kafka.

Source offsets (the PostgreSQL LSN a connector has published up to) are flushed every
``OFFSET_FLUSH_INTERVAL_MS``: after a SIGKILL of the worker, what it published since the last
flush is published again (at-least-once, duplicates bounded by that interval's worth of events).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path

from msglab.errors import InstallError, NotRunningError
from msglab.infra import external, probes
from msglab.infra.kafka import KAFKA_VERSION
from msglab.infra.service import HOST, Launch, NativeService, apt_install

OFFSET_FLUSH_INTERVAL_MS = 1000
"""How often the worker commits source offsets (Kafka's default is 60 s). After a worker crash
every event published since the last commit is published again: a short interval bounds those
duplicates, at the cost of one small write to the offsets topic per interval."""

JAVA_OPTS = ("-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true")
GROUP_ID = "msglab-connect"
"""The worker group; its internal topics are ``msglab-connect-configs|offsets|status``."""

MAIN_CLASS = "org.apache.kafka.connect.cli.ConnectDistributed"


def _resource(name: str) -> bytes:
    return resources.files("msglab.infra").joinpath(f"resources/connect/{name}").read_bytes()


@cache
def pom_property(name: str) -> str:
    """A ``<properties>`` value of ``resources/connect/pom.xml`` (the versions live there)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.fromstring(_resource("pom.xml"))
    node = root.find(f"m:properties/m:{name}", ns)
    if node is None or not node.text:
        raise InstallError(f"resources/connect/pom.xml has no <{name}> property")
    return node.text.strip()


def debezium_version() -> str:
    return pom_property("debezium.version")


class Connect(NativeService):
    name = "connect"
    keeps_data = False
    stop_timeout_s = 40.0  # a graceful stop stops the tasks and flushes their offsets

    @property
    def url(self) -> str:
        return f"http://{self.address}"  # the REST API

    @property
    def install_dir(self) -> Path:
        return self.settings.cache / f"connect-{KAFKA_VERSION}-debezium-{debezium_version()}"

    @property
    def lib_dir(self) -> Path:
        return self.install_dir / "lib"

    @property
    def plugin_dir(self) -> Path:
        return self.install_dir / "plugins"

    def _stamp(self) -> Path:
        return self.install_dir / "pom.sha256"

    def is_installed(self) -> bool:
        stamp = self._stamp()
        return (
            shutil.which("java") is not None
            and stamp.exists()
            and stamp.read_text().strip() == hashlib.sha256(_resource("pom.xml")).hexdigest()
        )

    def install(self) -> None:
        if pom_property("kafka.version") != KAFKA_VERSION:
            raise InstallError(
                f"resources/connect/pom.xml pins Kafka {pom_property('kafka.version')}, the "
                f"broker runs {KAFKA_VERSION}: Connect must run the broker's version"
            )
        if shutil.which("java") is None:
            apt_install(["openjdk-17-jre-headless"])
        if shutil.which("mvn") is None:
            apt_install(["maven"])
        target = self.install_dir
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target) as tmp:
            pom = Path(tmp) / "pom.xml"
            pom.write_bytes(_resource("pom.xml"))
            lib, plugins = Path(tmp) / "lib", Path(tmp) / "plugins"
            mvn = ["mvn", "-q", "-B", "-f", str(pom)]
            self._mvn(
                [*mvn, "dependency:copy-dependencies", f"-DoutputDirectory={lib}"],
                "Kafka Connect jars",
            )
            if not any(lib.glob("connect-runtime-*.jar")):
                raise InstallError(f"Maven resolved no connect-runtime jar into {lib}")
            self._mvn(
                [*mvn, "dependency:unpack", f"-Dconnect.plugins.dir={plugins}"],
                f"the Debezium {debezium_version()} PostgreSQL plugin",
            )
            if not any(plugins.glob("*/debezium-connector-postgres-*.jar")):
                raise InstallError(f"the Debezium plugin archive did not unpack into {plugins}")
            for old, new in ((self.lib_dir, lib), (self.plugin_dir, plugins)):
                shutil.rmtree(old, ignore_errors=True)
                new.rename(old)
        self._stamp().write_text(hashlib.sha256(_resource("pom.xml")).hexdigest() + "\n")

    @staticmethod
    def _mvn(argv: list[str], what: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise InstallError(f"resolving {what} with Maven failed (`{' '.join(argv)}`):\n{tail}")

    # -- what the worker needs ---------------------------------------------------------------

    def _dependency(self, service: str) -> tuple[str, str]:
        """(address, bootstrap-or-URL) of a server the worker needs, msglab's own or external."""
        url = self.settings.external.get(service)
        if url is not None:
            host, port = external.host_port(service, url)
            return f"{host}:{port}", url
        port = self.settings.ports[service]
        return f"{HOST}:{port}", f"{HOST}:{port}"

    @property
    def bootstrap_servers(self) -> str:
        return self._dependency("kafka")[1]

    def missing_dependencies(self) -> list[str]:
        """The servers Connect needs that do not answer now (``kafka``, ``postgres``)."""
        missing = []
        timeout = min(self.settings.connect_timeout_s, 2.0)
        for service in ("kafka", "postgres"):
            address = self._dependency(service)[0]
            host, port = address.rsplit(":", 1)
            if not external.PROBES[service](host, int(port), timeout):
                missing.append(f"{service} ({address})")
        return missing

    def _check_dependencies(self) -> None:
        missing = self.missing_dependencies()
        if missing:
            raise NotRunningError(
                f"connect needs {' and '.join(missing)} running; start them first: "
                "`msglab infra up kafka postgres`"
            )

    def worker_properties(self) -> str:
        """The distributed worker's config (JSON by default; each connector picks its own
        converters, as msglab's outbox connector does)."""
        return "\n".join(
            [
                f"bootstrap.servers={self.bootstrap_servers}",
                f"group.id={GROUP_ID}",
                "key.converter=org.apache.kafka.connect.json.JsonConverter",
                "value.converter=org.apache.kafka.connect.json.JsonConverter",
                "key.converter.schemas.enable=false",
                "value.converter.schemas.enable=false",
                f"config.storage.topic={GROUP_ID}-configs",
                f"offset.storage.topic={GROUP_ID}-offsets",
                f"status.storage.topic={GROUP_ID}-status",
                "config.storage.replication.factor=1",
                "offset.storage.replication.factor=1",
                "status.storage.replication.factor=1",
                "offset.storage.partitions=1",
                "status.storage.partitions=1",
                f"offset.flush.interval.ms={OFFSET_FLUSH_INTERVAL_MS}",
                f"listeners=http://{HOST}:{self.port}",
                f"rest.advertised.host.name={HOST}",
                f"rest.advertised.port={self.port}",
                f"plugin.path={self.plugin_dir.resolve()}",
                # connector passwords stay in files only root reads: a config says
                # ${file:<path>:password} (msglab.cdc.outbox.write_password_file)
                "config.providers=file",
                "config.providers.file.class="
                "org.apache.kafka.common.config.provider.FileConfigProvider",
                f"config.providers.file.param.allowed.paths={self.secrets_dir.resolve()}",
                # Every plugin here (Debezium's, Kafka's own) has ServiceLoader manifests:
                # loading them from those skips a reflective scan of every jar (~4.5 s).
                "plugin.discovery=service_load",
                # One worker: after a SIGKILL its successor must not wait for the dead member
                # (session timeout, the broker's minimum) nor delay reassigning its tasks.
                "session.timeout.ms=6000",
                "heartbeat.interval.ms=2000",
                "scheduled.rebalance.max.delay.ms=0",
                "",
            ]
        )

    @property
    def secrets_dir(self) -> Path:
        """Connector passwords, one properties file each (mode 0600 in a 0700 folder): the only
        folder the worker's FileConfigProvider (alias ``file``) may read."""
        return self.root / "secrets"

    def prepare(self) -> bool:
        self._check_dependencies()
        self.root.mkdir(parents=True, exist_ok=True)
        self.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        (self.root / "worker.properties").write_text(self.worker_properties())
        (self.root / "log4j2.properties").write_bytes(_resource("log4j2.properties"))
        marker = self.data_dir / "prepared"
        if marker.exists():
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"worker group {GROUP_ID}; its state lives in Kafka\n")
        return True

    def launch(self) -> Launch:
        return Launch(
            [
                "java",
                *JAVA_OPTS,
                f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.root / 'logs'}",
                "-cp",
                f"{self.lib_dir}/*",
                MAIN_CLASS,
                str(self.root / "worker.properties"),
            ]
        )

    def ping(self, timeout_s: float) -> bool:
        return probes.connect_rest(HOST, self.port, timeout_s)

    def version(self) -> str | None:
        return f"{KAFKA_VERSION} (Debezium {debezium_version()})"

    @property
    def owned_ports(self) -> Mapping[str, int]:
        return {"connect": self.port}
