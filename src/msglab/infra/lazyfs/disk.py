"""A server's data folder, on the plain disk or on the lazy filesystem.

On the lazy filesystem the data lives in ``<root>/data.backing`` (the "disk") and
``<root>/data`` is the mount point the server uses. A server goes there with ``up --lazyfs``
(its data is moved, by a rename) and stays there through kills, power cuts and restarts;
``down`` unmounts cleanly (every byte written) and moves the data back.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
from pathlib import Path

from msglab.errors import InfraError
from msglab.infra import process
from msglab.infra.lazyfs.mount import LazyMount, mounted
from msglab.infra.lazyfs.report import CutReport


class DataDisk:
    """The data folder ``data_dir`` of a server (or the files transport's folder), on the lazy
    filesystem or not; ``root`` holds the backing folder, the mount's pid, log and socket, and
    ``power-cuts.jsonl``."""

    def __init__(self, root: Path, data_dir: Path) -> None:
        self.root = root
        self.data_dir = data_dir
        self.backing = root / "data.backing"
        self.mount = LazyMount(data_dir, self.backing, root)
        self.cuts_path = root / "power-cuts.jsonl"

    def on_lazyfs(self) -> bool:
        return self.backing.is_dir()

    def enter(self) -> None:
        """Move the data (if any) to the backing folder; the server must be stopped."""
        if self.on_lazyfs():
            return
        if mounted(self.data_dir):
            raise InfraError(f"{self.data_dir} is mounted by something else than msglab")
        self.root.mkdir(parents=True, exist_ok=True)
        if self.data_dir.exists():
            os.rename(self.data_dir, self.backing)
        else:
            self.backing.mkdir(parents=True)
        self.data_dir.mkdir()

    def attach(self, allow_other: bool) -> None:
        """Mount the lazy filesystem on the data folder, if the data is on it."""
        if self.on_lazyfs():
            self.mount.mount(allow_other)

    def detach(self) -> None:
        """Unmount cleanly (what the filesystem holds is written); nothing when not mounted."""
        if self.mount.is_mounted() and self.mount.answers():
            self.mount.sync()
        self.mount.unmount()

    def leave(self) -> None:
        """Unmount and move the data back to the plain data folder."""
        self.detach()
        if not self.on_lazyfs():
            return
        if self.data_dir.exists():
            try:
                self.data_dir.rmdir()  # the empty mount point
            except OSError as exc:
                raise InfraError(
                    f"cannot move {self.backing} back: {self.data_dir} is not empty ({exc})"
                ) from exc
        os.rename(self.backing, self.data_dir)

    def power_cut(self, service: str, server_pid: int | None) -> CutReport:
        """SIGKILL the server, its children and whatever holds the data folder, all at once;
        drop what was not fsynced; unmount. Recorded as a line of ``power-cuts.jsonl``."""
        at = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        fs_pid = self.mount.pid()
        victims = [server_pid, *process.descendants(server_pid)] if server_pid else []
        victims += [p for p in process.holders(self.data_dir) if p not in victims]
        victims = [p for p in victims if p is not None and p != fs_pid]
        for pid in victims:
            process.send(pid, signal.SIGKILL)
        for pid in victims:
            if not process.wait_gone(pid, 10.0):
                process.kill_hard(pid)
        report = CutReport.of(service, at, victims, self.mount.cut())
        with open(self.cuts_path, "a") as cuts:
            cuts.write(json.dumps(report.to_json()) + "\n")
        return report


def folder_disk(folder: Path) -> DataDisk:
    """A plain folder (the files transport's exchange folder) as a ``DataDisk``: its lazy
    filesystem's files in ``<folder>.lazyfs`` beside it."""
    return DataDisk(folder.with_name(folder.name + ".lazyfs"), folder)
