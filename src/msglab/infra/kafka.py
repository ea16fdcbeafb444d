"""Apache Kafka 4 in KRaft mode (one combined broker + controller), run from Maven Central jars.

The jars come from ``resources/kafka/pom.xml`` via ``mvn dependency:copy-dependencies`` into
``<cache>/kafka-<version>/lib`` (shared by every MSGLAB_HOME); the broker runs with
``java -cp 'lib/*' kafka.Kafka server.properties``. Kafka never fsyncs by default: a SIGKILL
keeps what reached the page cache, a power cut would not.

Clients use the PLAINTEXT listener on the ``kafka`` port. A second listener, PROXIED on
``kafka_proxied``, is Toxiproxy's upstream and advertises the proxy's address (``kafka_proxy``):
a broker answers metadata requests with the addresses of the listener the request came in on,
so a client that bootstraps through the proxy reconnects through it too.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from msglab.errors import InstallError, ServerStartError
from msglab.infra import probes
from msglab.infra.service import HOST, Launch, NativeService, apt_install

KAFKA_VERSION = "4.1.1"
JAVA_OPTS = ("-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true")


def _pom() -> bytes:
    return resources.files("msglab.infra").joinpath("resources/kafka/pom.xml").read_bytes()


def _log4j2() -> str:
    return resources.files("msglab.infra").joinpath("resources/kafka/log4j2.properties").read_text()


class Kafka(NativeService):
    name = "kafka"

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
        data = self.data_dir.resolve()
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers={HOST}:{self.controller_port}",
                f"listeners=PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port},"
                f"PROXIED://{HOST}:{self.proxied_port}",
                f"advertised.listeners=PLAINTEXT://{HOST}:{self.port},"
                f"CONTROLLER://{HOST}:{self.controller_port},"
                f"PROXIED://{HOST}:{self.settings.ports['kafka_proxy']}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map="
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT",
                f"log.dirs={data}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # After a SIGKILL the restarted broker cannot register until the controller
                # expires the old session (default 9 s): shorter, a restart takes ~6 s, not 13.
                "broker.session.timeout.ms=3000",
                "broker.heartbeat.interval.ms=1000",
                "auto.create.topics.enable=true",
                "",
            ]
        )

    def prepare(self) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "server.properties").write_text(self._properties())
        (self.root / "log4j2.properties").write_text(_log4j2())
        if (self.data_dir / "meta.properties").exists():
            return False
        cluster_id = self._cluster_id()
        argv = [
            "java",
            "-cp",
            f"{self.lib_dir}/*",
            *self._log_opts(),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-g",
            "-t",
            cluster_id,
            "-c",
            str(self.root / "server.properties"),
        ]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServerStartError(
                "formatting Kafka's KRaft storage failed", (result.stdout + result.stderr)[-3000:]
            )
        return True

    def _cluster_id(self) -> str:
        while True:  # 22-char URL-safe base64 of 16 random bytes, not starting with '-'
            cid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
            if not cid.startswith("-"):
                return cid

    def _log_opts(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.root / 'logs'}",
        ]

    def launch(self) -> Launch:
        return Launch(
            [
                "java",
                *JAVA_OPTS,
                *self._log_opts(),
                "-cp",
                f"{self.lib_dir}/*",
                "kafka.Kafka",
                str(self.root / "server.properties"),
            ]
        )

    def ping(self, timeout_s: float) -> bool:
        return probes.kafka_api_versions(HOST, self.port, timeout_s)

    def version(self) -> str | None:
        return KAFKA_VERSION
