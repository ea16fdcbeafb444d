"""RabbitMQ (Debian ``rabbitmq-server``) as msglab's own node, with its own epmd.

The scripts in ``/usr/lib/rabbitmq/bin`` are run directly (the ``/usr/sbin`` wrappers switch to
the rabbitmq user). The node is isolated by environment: its own HOME (Erlang cookie), node
name, ports, epmd port and folders. The process to kill is ``beam.smp``, whose PID the node
writes to ``RABBITMQ_PID_FILE``. epmd outlives every node kill; ``down`` stops it.
``queues`` lists the node's queues as it reports them (``rabbitmqctl list_queues``); ``ctl`` runs
any of RabbitMQ's CLI tools against the node (each call starts an Erlang VM: about 0.5 s).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msglab.errors import NotRunningError, ServerStartError
from msglab.infra import probes, process
from msglab.infra.service import HOST, Launch, NativeService, apt_install

SCRIPTS = Path("/usr/lib/rabbitmq/bin")
HELPERS_GRACE_S = 5.0


@dataclass(frozen=True)
class Queue:
    """A queue as the node reports it."""

    name: str
    type: str  # classic | quorum | stream
    durable: bool


class RabbitMQ(NativeService):
    name = "rabbitmq"

    @property
    def owned_ports(self) -> Mapping[str, int]:
        return {"rabbitmq": self.port, "rabbitmq_dist": self.settings.ports["rabbitmq_dist"]}

    @property
    def node(self) -> str:
        return f"msglab{self.port}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.address}/%2F"

    @property
    def _epmd_port(self) -> int:
        return self.settings.ports["rabbitmq_epmd"]

    @property
    def _beam_pid_file(self) -> Path:
        return self.root / "beam.pid"

    @property
    def _epmd_pid_file(self) -> Path:
        return self.root / "epmd.pid"

    def is_installed(self) -> bool:
        return (SCRIPTS / "rabbitmq-server").exists() and shutil.which("epmd") is not None

    def install(self) -> None:
        apt_install(["rabbitmq-server"])

    def env(self) -> dict[str, str]:
        """The environment that makes the server scripts and rabbitmqctl talk to this node."""
        return {
            **os.environ,
            "HOME": str(self.root),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.settings.ports["rabbitmq_dist"]),
            "RABBITMQ_MNESIA_BASE": str(self.data_dir),
            "RABBITMQ_LOG_BASE": str(self.root / "logs"),
            "RABBITMQ_PID_FILE": str(self._beam_pid_file),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "ERL_CRASH_DUMP": str(self.root / "erl_crash.dump"),
            "ERL_EPMD_PORT": str(self._epmd_port),
            "ERL_EPMD_ADDRESS": HOST,
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def prepare(self) -> bool:
        fresh = self._fresh_data()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        (self.root / "rabbitmq-env.conf").write_text("")
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq.conf").write_text("\n".join([*self._config(), ""]))
        self._beam_pid_file.unlink(missing_ok=True)
        return fresh

    def _config(self) -> list[str]:
        """The lines of ``rabbitmq.conf``."""
        return [
            f"listeners.tcp.1 = {self.host}:{self.port}",
            "log.console = true",
            "log.console.level = info",
            "log.console.use_colors = off",  # server.log is a file, read in error messages
            "log.file = false",
        ]

    def before_start(self) -> None:
        if self._epmd_pid() is not None:
            return
        if process.port_in_use(self._epmd_port):
            holder = process.port_holder(self._epmd_port)
            raise ServerStartError(
                f"rabbitmq: epmd port {HOST}:{self._epmd_port} is held by {holder}; "
                "choose another with MSGLAB_RABBITMQ_EPMD_PORT"
            )
        epmd = process.spawn(
            ["epmd", "-port", str(self._epmd_port), "-address", HOST],
            self.root / "epmd.log",
            self.env(),
            self.root,
        )
        self._epmd_pid_file.write_text(f"{epmd.pid}\n")

    def _epmd_pid(self) -> int | None:
        try:
            pid = int(self._epmd_pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if process.is_alive(pid) else None

    def _stop(self) -> bool:
        """Stop ``beam.smp``, then wait for the processes that go with it: the
        ``rabbitmq-server`` script that started it (which exits after it) and its port
        programs, so that nothing of the node is left when ``down`` returns."""
        pid = self.pid()
        helpers = process.descendants(pid) if pid is not None else []
        launcher = process.parent(pid) if pid is not None else None
        if launcher is not None and process.process_name(launcher) == "rabbitmq-server":
            helpers.append(launcher)
        stopped = super()._stop()
        for helper in helpers:
            if not process.wait_gone(helper, HELPERS_GRACE_S):
                process.kill_hard(helper)
        return stopped

    def after_stop(self) -> None:
        pid = self._epmd_pid()
        if pid is not None:
            process.stop(pid, signal.SIGTERM, 5)
        self._epmd_pid_file.unlink(missing_ok=True)

    def launch(self) -> Launch:
        return Launch([str(SCRIPTS / "rabbitmq-server")], env=self.env())

    def server_pid(self, spawned: subprocess.Popen[bytes]) -> int | None:
        try:
            return int(self._beam_pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def ping(self, timeout_s: float) -> bool:
        return probes.amqp_handshake(self.host, self.port, timeout_s) is not None

    def ctl(self, *args: str, tool: str = "rabbitmqctl", timeout_s: float = 30.0) -> Any:
        """Run ``tool`` (rabbitmqctl, rabbitmq-queues, rabbitmq-diagnostics) with ``args``
        against this node, quiet, its JSON output parsed. NotRunningError when the node does not
        answer within ``timeout_s`` or the tool fails (with the tool's last line)."""
        argv = [str(SCRIPTS / tool), "-n", self.node, "-q", "--formatter", "json", *args]
        what = f"{tool} {args[0]} ({self.name})"
        try:
            result = subprocess.run(
                argv, env=self.env(), capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise NotRunningError(f"{what}: no answer in {exc.timeout:g} s") from exc
        if result.returncode != 0:
            lines = (result.stdout + result.stderr).strip().splitlines()
            why = lines[-1] if lines else f"exit {result.returncode}"
            raise NotRunningError(f"{what}: {why}")
        try:
            return json.loads(result.stdout)
        except ValueError as exc:
            raise NotRunningError(f"{what}: not JSON: {result.stdout[:200]!r}") from exc

    def queues(self) -> list[Queue]:
        """Every queue of the node's default virtual host, with its type and durability, as
        ``rabbitmqctl list_queues`` reports them. NotRunningError: the node does not answer."""
        found = self.ctl("list_queues", "name", "type", "durable")
        return [Queue(q["name"], q["type"], q["durable"]) for q in found]

    def version(self) -> str | None:
        found = probes.amqp_handshake(self.host, self.port, 1.0)
        if found is not None:
            return found
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return out.split("-")[0] or None
