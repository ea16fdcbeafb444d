"""The lifecycle every native server shares: install, prepare, start, wait ready, stop, kill.

A ``NativeService`` owns one folder ``<home>/<name>/`` holding ``data/``, ``server.log``,
its config files, ``server.pid`` (the *real* server process: the JVM, ``beam.smp``,
``redis-server``, the postmaster) and ``timings.json`` (cold and warm start times).
``up(lazyfs=True)`` puts ``data/`` on msglab's lazy filesystem (``lazyfs/disk.py``), where
``power_cut`` can drop what the server did not fsync.
Subclasses say how to install, configure, start and probe their server; this class makes
``up`` idempotent, refuses ports held by others (on the server's own ``host``), and turns a
failed start into a ServerStartError carrying the tail of the server's log. ``up`` is
``begin`` (spawn) then ``Starting.poll`` until ready: a cluster (``cluster.py``) spawns every
node first, then waits for them all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, NoReturn

from msglab.config import redact_url
from msglab.errors import (
    InstallError,
    NotRunningError,
    PortInUseError,
    ServerStartError,
    UsageError,
)
from msglab.infra import process
from msglab.infra.lazyfs import CutReport, check_available
from msglab.infra.lazyfs.disk import DataDisk
from msglab.settings import Settings

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Status:
    """What ``msglab infra status`` shows for one service."""

    service: str
    owner: str  # "msglab" (native), "external" (given by URL) or "compose"
    pid: int | None
    address: str  # host:port
    url: str  # what a plain client connects with, password included: never shown as is
    healthy: bool
    data_dir: str | None
    version: str | None
    lazyfs: bool = False  # the data folder is on msglab's lazy filesystem (power cuts)
    node: str | None = None  # one node of a cluster (``n2`` of ``kafka-cluster``), else None
    role: str | None = None  # a node's role in its cluster at that moment (``controller-leader``)

    def to_json(self) -> dict[str, object]:
        """The fields as shown to people and scripts: the URL's password is ``***``
        (``msglab infra url SERVICE`` prints it whole)."""
        return {**asdict(self), "url": redact_url(self.url)}


@dataclass(frozen=True)
class StartReport:
    """The outcome of ``up`` for one service: ``cold`` is the first start on fresh data."""

    service: str
    started: bool  # False when it was already running
    cold: bool
    seconds: float


@dataclass(frozen=True)
class Launch:
    """How to start a server: argv, environment, and the user to run it as (None: ourselves)."""

    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    user: str | None = None


def apt_install(packages: Sequence[str]) -> None:
    """Install Debian packages without starting their system services (we run our own)."""
    if os.geteuid() != 0:
        raise InstallError(
            f"{' '.join(packages)} missing and installing needs root: "
            f"run `sudo apt-get install {' '.join(packages)}`"
        )
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        if made_policy:  # exit 101 = "do not start services" for invoke-rc.d
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        lists = Path("/var/lib/apt/lists")
        if not any(lists.glob("*Packages*")):
            _run(["apt-get", "update", "-qq"], env)
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env)
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)


def _run(argv: Sequence[str], env: Mapping[str, str]) -> None:
    result = subprocess.run(list(argv), env=dict(env), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise InstallError(f"`{' '.join(argv)}` failed (exit {result.returncode}):\n{tail}")


GROUP_BASE = 40_000


def node_group(address: str) -> int:
    """The group id of the processes of the node on ``address`` (127.0.c.d: 40000 + 256 c + d),
    its identity in ``netrules``' rules."""
    _, _, c, d = (int(part) for part in address.split("."))
    return GROUP_BASE + 256 * c + d


class NativeService(ABC):
    """One real server that msglab installs, runs as a process, kills and restarts.

    ``name`` is the service's (``kafka``), or a node's of a cluster (``kafka-cluster/n2``, given
    to the constructor): its folder is ``<home>/<name>/``. ``host`` is the one address it binds
    and advertises (127.0.0.1; a node of a cluster has its own loopback address)."""

    name: str
    host: str = HOST
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    stop_timeout_s: ClassVar[float] = 30.0
    keeps_data: ClassVar[bool] = True  # False: no data folder to put on the lazy filesystem
    keeps_settings: ClassVar[bool] = False  # True: what set_setting sets survives a restart

    def __init__(
        self, settings: Settings, name: str | None = None, host: str | None = None
    ) -> None:
        if name is not None:
            self.name = name
        if host is not None:
            self.host = host
        self.settings = settings
        self.root = settings.home / self.name
        self.data_dir = self.root / "data"
        self.log_path = self.root / "server.log"
        self.pid_path = self.root / "server.pid"
        self.timings_path = self.root / "timings.json"
        self.disk = DataDisk(self.root, self.data_dir)

    # -- what each server says -------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.settings.ports[self.name]

    @property
    def owned_ports(self) -> Mapping[str, int]:
        """Every port this server listens on, by setting name (checked free before a start)."""
        return {self.name: self.port}

    @property
    def group(self) -> int | None:
        """The group id its processes run with: a cluster node's identity (``node_group`` of
        its own address), None for a server on 127.0.0.1."""
        return None if self.host == HOST else node_group(self.host)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    @abstractmethod
    def url(self) -> str:
        """What a plain client of this server connects with."""

    @abstractmethod
    def is_installed(self) -> bool: ...

    @abstractmethod
    def install(self) -> None:
        """Install the server's software (idempotent); raise InstallError naming what failed."""

    @abstractmethod
    def prepare(self) -> bool:
        """Write config and initialise data (idempotent); True if the data was created now."""

    @abstractmethod
    def launch(self) -> Launch: ...

    @abstractmethod
    def ping(self, timeout_s: float) -> bool:
        """A protocol-level readiness check of this server."""

    @abstractmethod
    def version(self) -> str | None: ...

    def server_pid(self, spawned: subprocess.Popen[bytes]) -> int | None:
        """The real server's PID once known (default: the process we spawned)."""
        return spawned.pid

    def after_ready(self, cold: bool) -> None:
        """Hook for one-time setup that needs the running server (roles, databases)."""

    def before_start(self) -> None:
        """Hook for helper processes the server needs (RabbitMQ's epmd)."""

    def after_stop(self) -> None:
        """Hook to stop helper processes on ``down``."""

    # -- lifecycle -------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The running server's PID, or None (a stale or zombie PID counts as not running)."""
        return process.alive_pid(self.pid_path)

    def status(self) -> Status:
        pid = self.pid()
        healthy = pid is not None and self.ping(min(self.settings.connect_timeout_s, 2.0))
        return Status(
            service=self.name,
            owner="msglab",
            pid=pid,
            address=self.address,
            url=self.url,
            healthy=healthy,
            data_dir=str(self.data_dir),
            version=self.version(),
            lazyfs=self.disk.on_lazyfs(),
        )

    def up(self, lazyfs: bool = False) -> StartReport:
        """Make the server run and answer; idempotent. Raises PortInUseError, ServerStartError.

        ``lazyfs``: its data folder on the lazy filesystem (the server must be stopped to go
        there); once there it stays, through kills, power cuts and restarts, until ``down``.
        A failed or interrupted start kills what it spawned and unmounts."""
        starting = self.begin(lazyfs)
        try:
            while not starting.poll():
                if time.monotonic() > starting.deadline:
                    starting.time_out()
                time.sleep(0.1)
            return starting.done()
        except BaseException:
            starting.abort()
            raise

    def check_ports(self) -> None:
        """Raise PortInUseError for the first port of this server another process holds."""
        for setting, port in self.owned_ports.items():
            if process.port_in_use(port, self.host):
                raise PortInUseError(
                    setting,
                    port,
                    process.port_holder(port, self.host),
                    host=self.host,
                    server=self.name if self.host != HOST else None,  # a node of a cluster
                )

    def begin(self, lazyfs: bool = False) -> Starting:
        """The first half of ``up``: check, install, mount, prepare and spawn the server without
        waiting for it (a cluster starts every node so, then waits for all); ``poll`` the
        ``Starting`` until it is ready. Its start time counts from after the install."""
        began = time.monotonic()
        pid = self.pid()
        if lazyfs and not self.keeps_data:
            raise UsageError(f"{self.name} keeps no data: --lazyfs is for servers that do")
        if pid is not None:
            if lazyfs and not self.disk.on_lazyfs():
                raise UsageError(
                    f"{self.name} runs on the plain disk: `msglab infra down {self.name}`, "
                    "then up --lazyfs"
                )
            return Starting(self, None, began, cold=False)
        self.pid_path.unlink(missing_ok=True)
        self.check_ports()
        if lazyfs:
            check_available()
        if not self.is_installed():
            self.install()
        self.root.mkdir(parents=True, exist_ok=True)
        if lazyfs:
            self.disk.enter()
        began = time.monotonic()
        spawned = None
        try:
            self.disk.attach(allow_other=os.geteuid() == 0)
            cold = self.prepare()
            self.before_start()
            launch = self.launch()
            self._mark_log()
            spawned = process.spawn(
                launch.argv, self.log_path, launch.env, self.root, launch.user, self.group
            )
        except BaseException:
            if spawned is not None:
                self._kill_all(spawned)
            self.disk.detach()
            raise
        return Starting(self, spawned, began, cold)

    def _fresh_data(self) -> bool:
        """No data yet: the data folder is missing or empty (an empty mount point)."""
        return not self.data_dir.exists() or not any(self.data_dir.iterdir())

    def _mark_log(self) -> None:
        with open(self.log_path, "a") as log:
            log.write(f"\n==== msglab start {time.strftime('%Y-%m-%dT%H:%M:%S')} ====\n")

    def _ready_once(self, spawned: subprocess.Popen[bytes] | None) -> bool:
        """One look at a starting server: True once it answers; ServerStartError if it exited."""
        if spawned is not None:
            if spawned.poll() is not None and not self._server_outlived(spawned):
                self._fail(f"{self.name} exited with code {spawned.returncode} while starting")
            pid = self.server_pid(spawned)
            if pid is not None and not self.pid_path.exists():
                self.pid_path.write_text(f"{pid}\n")
        return self.ping(1.0) and self.pid() is not None

    def _server_outlived(self, spawned: subprocess.Popen[bytes]) -> bool:
        pid = self.server_pid(spawned)
        return pid is not None and pid != spawned.pid and process.is_alive(pid)

    def _kill_all(self, spawned: subprocess.Popen[bytes]) -> None:
        pids = {spawned.pid, self.server_pid(spawned)}
        for pid in [*pids, *(c for p in pids if p is not None for c in process.descendants(p))]:
            if pid is not None and process.is_alive(pid):
                process.kill_hard(pid)
        self.pid_path.unlink(missing_ok=True)

    def _fail(self, message: str) -> NoReturn:
        raise ServerStartError(f"{message} (log: {self.log_path})", process.log_tail(self.log_path))

    def down(self) -> bool:
        """Stop gracefully (SIGKILL after a timeout); True if it was running. Its data leaves
        the lazy filesystem (every byte written) for the plain data folder."""
        was_running = self._stop()
        self.disk.leave()
        return was_running

    def _stop(self) -> bool:
        pid = self.pid()
        if pid is not None:
            process.stop(pid, self.stop_signal, self.stop_timeout_s)
        self.pid_path.unlink(missing_ok=True)
        self.after_stop()
        return pid is not None

    def setting(self, key: str) -> str:
        """The server's current value of the run-time setting ``key``, read from the running
        server. UsageError: this server has no such setting msglab can read."""
        raise UsageError(f"{self.name} has no setting {key!r} msglab reads")

    def read_settings(self, keys: Sequence[str]) -> dict[str, str]:
        """``setting`` of each of ``keys`` (a server that can read them all at once does)."""
        return {key: self.setting(key) for key in keys}

    def saved_setting(self, key: str) -> str:
        """What ``set_setting(key, ...)`` puts back as it is now (``setting``, unless the
        server tells the value it was given from the one in force)."""
        return self.setting(key)

    def set_setting(self, key: str, value: str) -> None:
        """Set ``key`` on the running server; it lasts until set again (across restarts where
        the server keeps it: see each server). UsageError as ``setting``."""
        raise UsageError(f"{self.name} has no setting {key!r} msglab sets")

    def kill(self) -> int:
        """SIGKILL the real server process, verify it is gone, keep its data; the PID killed."""
        pid = self.pid()
        if pid is None:
            raise NotRunningError(f"{self.name} is not running; nothing to kill")
        process.crash(pid)
        return pid

    def power_cut(self) -> CutReport:
        """SIGKILL every process of the server, drop what it had not fsynced, unmount; the
        server stays down (``restart`` brings it back on the same lazy filesystem)."""
        self.check_cuttable()
        report = self.disk.power_cut(self.name, self.pid())
        self.pid_path.unlink(missing_ok=True)
        return report

    def check_cuttable(self) -> None:
        """Raise unless a power cut can hit this server now (its data on a mounted lazy
        filesystem): UsageError on the plain disk, NotRunningError once cut."""
        if not self.disk.on_lazyfs():
            service = self.name.partition("/")[0]
            raise UsageError(
                f"{self.name} is not on the lazy filesystem: `msglab infra up {service} "
                "--lazyfs` first (`msglab infra kill` crashes a server on the plain disk)"
            )
        if not self.disk.mount.is_mounted():
            raise NotRunningError(
                f"{self.name}'s lazy filesystem is not mounted (cut already?): nothing to cut"
            )

    def restart(self) -> StartReport:
        """Bring the server back with its data (after ``kill`` or ``power_cut``, or a graceful
        restart if up), on the lazy filesystem if it was there."""
        if self.pid() is not None:
            self._stop()
        return self.up()

    def _record_timing(self, cold: bool, seconds: float) -> None:
        record_timing(self.timings_path, cold, seconds)

    def timings(self) -> dict[str, float]:
        return read_timings(self.timings_path)


def read_timings(path: Path) -> dict[str, float]:
    """The last cold and warm start times kept in ``path`` (``timings.json``); {} if none."""
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in loaded.items()}


def record_timing(path: Path, cold: bool, seconds: float) -> None:
    """Keep a start's time in ``path`` as the cold or the warm one."""
    timings = read_timings(path)
    timings["cold_start_s" if cold else "warm_start_s"] = round(seconds, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(timings, indent=2) + "\n")


class Starting:
    """A server ``NativeService.begin`` spawned (``spawned``), or found running (None), on its
    way to ready: ``poll`` until True, then ``done``; ``time_out`` once past ``deadline``;
    ``abort`` kills what was spawned and unmounts (after a failure, an interrupt)."""

    def __init__(
        self,
        service: NativeService,
        spawned: subprocess.Popen[bytes] | None,
        began: float,
        cold: bool,
    ) -> None:
        self.service = service
        self.spawned = spawned
        self.began = began
        self.cold = cold
        self.deadline = began + service.settings.start_timeout_s

    def poll(self) -> bool:
        """True once the server answers; ServerStartError (its log's tail) if it exited."""
        return self.service._ready_once(self.spawned)

    def time_out(self) -> NoReturn:
        svc = self.service
        if self.spawned is not None:
            svc._kill_all(self.spawned)
        svc._fail(f"{svc.name} was not ready after {svc.settings.start_timeout_s:.0f}s")

    def done(self) -> StartReport:
        """The server answers: its one-time setup, its start time recorded."""
        svc = self.service
        if self.spawned is None:
            return StartReport(svc.name, started=False, cold=False, seconds=0.0)
        seconds = time.monotonic() - self.began
        svc.after_ready(self.cold)
        svc._record_timing(self.cold, seconds)
        return StartReport(svc.name, started=True, cold=self.cold, seconds=seconds)

    def abort(self) -> None:
        if self.spawned is not None:
            self.service._kill_all(self.spawned)
            self.service.disk.detach()
