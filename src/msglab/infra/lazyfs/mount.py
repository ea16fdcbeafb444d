"""One lazy filesystem mount, run as its own process: mount, unsynced, sync, cut, unmount.

The filesystem process (``python -m msglab.infra.lazyfs``) runs in its own session so that it
outlives the command that mounted it; it is mounted with ``auto_unmount``, so that the kernel
mount goes with it even if it is killed. ``unmount`` asks for a clean unmount (the filesystem
writes what it holds) and waits for the process to end.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msglab.errors import FuseUnavailableError, InfraError
from msglab.extras import missing
from msglab.infra import process
from msglab.infra.lazyfs import control


def unavailable() -> list[str]:
    """What this machine lacks to mount a lazy filesystem, each with how to get it."""
    lacking = []
    if not Path("/dev/fuse").exists():
        lacking.append("/dev/fuse (the kernel's FUSE device; in a container: --device /dev/fuse)")
    if shutil.which("fusermount3") is None:
        lacking.append(
            "fusermount3 (Debian's fuse3: `msglab infra install` or apt-get install fuse3)"
        )
    if missing("lazyfs"):
        lacking.append("mfusepy (pip install 'msglab[lazyfs]')")
    return lacking


def check_available() -> None:
    lacking = unavailable()
    if lacking:
        raise FuseUnavailableError("the lazy filesystem needs " + "; ".join(lacking))


def mounted(mountpoint: Path) -> bool:
    """True when ``mountpoint`` is a mount point (any filesystem), per /proc/mounts."""
    target = os.path.realpath(mountpoint)  # no stat: a dead mount answers ENOTCONN
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) > 1 and _unescape(fields[1]) == target:
            return True
    return False


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def syncfs(path: Path) -> None:
    """Have the kernel hand its dirty pages (a mapping's writes) to the filesystem of ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ctypes.CDLL(None, use_errno=True).syncfs(fd)
    finally:
        os.close(fd)


def _control_path(folder: Path) -> Path:
    path = folder / "lazyfs.sock"
    if len(str(path)) < 100:  # a unix socket path has room for 107 bytes
        return path
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:16]
    return Path("/tmp") / f"msglab-lazyfs-{digest}.sock"


@dataclass(frozen=True)
class LazyMount:
    """The lazy filesystem of ``mountpoint`` over ``backing``; its pid, log and control socket
    live in ``folder``."""

    mountpoint: Path
    backing: Path
    folder: Path

    @property
    def control(self) -> Path:
        return _control_path(self.folder)

    @property
    def log_path(self) -> Path:
        return self.folder / "lazyfs.log"

    @property
    def pid_path(self) -> Path:
        return self.folder / "lazyfs.pid"

    def pid(self) -> int | None:
        return process.alive_pid(self.pid_path)

    def is_mounted(self) -> bool:
        return mounted(self.mountpoint)

    def answers(self) -> bool:
        try:
            return bool(control.request(self.control, "ping", timeout_s=2.0).get("ok"))
        except (OSError, ValueError):
            return False

    def mount(self, allow_other: bool, timeout_s: float = 20.0) -> None:
        """Mount (a stale mount of a dead filesystem is removed first); InfraError with the
        filesystem's log when it does not come up."""
        check_available()
        if self.pid() is not None and self.is_mounted() and self.answers():
            return
        self.unmount()
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.backing.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "msglab.infra.lazyfs", str(self.mountpoint)]
        argv += [str(self.backing), "--control", str(self.control)]
        if allow_other:
            argv.append("--allow-other")
        with open(self.log_path, "a") as log:
            log.write(f"\n==== msglab lazyfs mount {time.strftime('%Y-%m-%dT%H:%M:%S')} ====\n")
        spawned = process.spawn(argv, self.log_path, None, self.folder)
        self.pid_path.write_text(f"{spawned.pid}\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if spawned.poll() is not None:
                self.unmount()
                raise InfraError(
                    f"the lazy filesystem on {self.mountpoint} exited with code "
                    f"{spawned.returncode}:\n{process.log_tail(self.log_path, 15)}"
                )
            if self.is_mounted() and self.answers():
                return
            time.sleep(0.05)
        self.unmount()
        raise InfraError(
            f"the lazy filesystem on {self.mountpoint} did not come up in {timeout_s:.0f}s:\n"
            f"{process.log_tail(self.log_path, 15)}"
        )

    def unsynced(self) -> list[dict[str, Any]]:
        """What a cut would drop now (path, dropped_bytes, size, synced_size per file)."""
        return list(control.request(self.control, "unsynced")["files"])

    def sync(self) -> int:
        """Write every dirty file to the backing folder; the bytes written."""
        syncfs(self.mountpoint)
        return int(control.request(self.control, "sync")["written"])

    def cut(self) -> list[dict[str, Any]]:
        """The power cut: pull the kernel's dirty pages in, drop every unsynced byte, unmount
        (the kernel's cached pages go with the mount). What was dropped, per file."""
        syncfs(self.mountpoint)
        lost = list(control.request(self.control, "cut")["files"])
        self.unmount()
        return lost

    def unmount(self, timeout_s: float = 15.0) -> None:
        """Unmount (lazily if something still holds it) and wait for the process to end;
        nothing to do when not mounted."""
        if self.is_mounted():
            done = subprocess.run(["fusermount3", "-u", str(self.mountpoint)], capture_output=True)
            if done.returncode != 0 and self.is_mounted():
                subprocess.run(
                    ["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True
                )
        pid = self.pid()
        if pid is not None and not process.wait_gone(pid, timeout_s):
            process.kill_hard(pid)
        if self.is_mounted():  # its process died without unmounting: "transport not connected"
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True)
        if self.is_mounted():
            raise InfraError(
                f"{self.mountpoint} is still mounted; try `umount -l {self.mountpoint}`"
            )
        self.pid_path.unlink(missing_ok=True)
