"""Redis (Debian ``redis-server``) as msglab's own server, append-only file on.

With ``appendfsync always`` every write Redis confirmed is on disk; with ``everysec`` it
survives a process kill (the page cache) but not a power cut. Pub/sub stores nothing either way.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from msglab.errors import NotRunningError, UsageError
from msglab.infra import probes
from msglab.infra.service import Launch, NativeService, apt_install


class Redis(NativeService):
    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://{self.address}/0"

    def is_installed(self) -> bool:
        return shutil.which("redis-server") is not None

    def install(self) -> None:
        apt_install(["redis-server"])

    def prepare(self) -> bool:
        fresh = self._fresh_data()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return fresh

    def launch(self) -> Launch:
        return Launch(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--dir",
                str(self.data_dir),
                "--daemonize",
                "no",
                "--logfile",
                "",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.settings.redis_appendfsync,
            ]
        )

    def setting(self, key: str) -> str:
        """``CONFIG GET key`` (``appendfsync`` ...)."""
        lines = self._cli("CONFIG", "GET", key).splitlines()
        if len(lines) < 2:
            raise UsageError(f"redis has no setting {key!r}")
        return lines[1]

    def set_setting(self, key: str, value: str) -> None:
        """``CONFIG SET key value``: until the server restarts (it starts with msglab's
        command line, ``appendfsync`` from MSGLAB_REDIS_APPENDFSYNC)."""
        answer = self._cli("CONFIG", "SET", key, value).strip()
        if answer != "OK":
            raise UsageError(f"redis refused CONFIG SET {key} {value}: {answer}")

    def _cli(self, *command: str) -> str:
        result = subprocess.run(
            ["redis-cli", "-h", self.host, "-p", str(self.port), "--raw", *command],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if result.returncode != 0:
            raise NotRunningError(f"redis-cli {' '.join(command)}: {result.stderr.strip()}")
        return result.stdout

    def ping(self, timeout_s: float) -> bool:
        return probes.redis_ping(self.host, self.port, timeout_s)

    def version(self) -> str | None:
        exe = shutil.which("redis-server")
        if exe is None:
            return None
        out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
        match = re.search(r"v=(\S+)", out)
        return match.group(1) if match else None
