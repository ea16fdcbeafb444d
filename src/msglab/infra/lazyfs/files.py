"""The lazy filesystem's table of files: handles, one ``FileState`` per backing inode, the cut.

Paths here are the mount's (``/a/b``); ``backing`` maps them onto the backing folder.
Every method is called with the filesystem's lock held.
"""

from __future__ import annotations

import errno
import os
import time

from msglab.infra.lazyfs.cache import FileState

_DROP_FLAGS = os.O_APPEND | os.O_TRUNC | os.O_DIRECT | os.O_SYNC | os.O_DSYNC
SYNC_FLAGS = os.O_SYNC | os.O_DSYNC


class Files:
    """Open handles and dirty files of one mount."""

    def __init__(self, backing: str) -> None:
        self.backing = backing.rstrip("/")
        self.states: dict[tuple[int, int], FileState] = {}
        self.handles: dict[int, tuple[FileState, bool]] = {}  # fh -> (file, O_SYNC/O_DSYNC)
        self._next = 1

    def real(self, path: str) -> str:
        return self.backing + path

    def open(self, path: str, flags: int, mode: int | None = None) -> tuple[int, int]:
        """Open ``path`` (creating it with ``mode`` when given); (fh, backing fd)."""
        keep = flags & ~(_DROP_FLAGS | os.O_ACCMODE)
        if mode is not None:
            keep |= os.O_CREAT
        try:  # read-write whatever the caller asked: pages are filled and flushed through it
            fd = os.open(self.real(path), keep | os.O_RDWR, 0o777 if mode is None else mode)
        except PermissionError:
            fd = os.open(self.real(path), keep | (flags & os.O_ACCMODE), mode or 0o777)
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = FileState.open(fd, path)
        else:
            os.close(fd)
            state.path = path
        if flags & os.O_TRUNC:
            state.truncate(0, time.time_ns())
        state.opens += 1
        fh = self._next
        self._next += 1
        self.handles[fh] = (state, bool(flags & SYNC_FLAGS))
        return fh, state.fd

    def handle(self, fh: int) -> tuple[FileState, bool]:
        try:
            return self.handles[fh]
        except KeyError:
            raise OSError(errno.EBADF, "unknown file handle") from None

    def release(self, fh: int) -> None:
        state, _ = self.handles.pop(fh)
        state.opens -= 1
        self._forget_if_idle(state)

    def _forget_if_idle(self, state: FileState) -> None:
        if state.opens == 0 and (state.unlinked or not state.dirty):
            st = os.fstat(state.fd)
            self.states.pop((st.st_dev, st.st_ino), None)
            os.close(state.fd)

    def by_path(self, path: str) -> tuple[os.stat_result, FileState | None]:
        st = os.lstat(self.real(path))
        return st, self.states.get((st.st_dev, st.st_ino))

    def removed(self, st: os.stat_result) -> None:
        """The backing file ``st`` lost a name; forget its data once it has none left."""
        state = self.states.get((st.st_dev, st.st_ino))
        if state is not None and st.st_nlink <= 1:
            state.unlinked = True
            self._forget_if_idle(state)

    def renamed(self, old: str, new: str) -> None:
        for state in self.states.values():
            if state.path == old or state.path.startswith(old + "/"):
                state.path = new + state.path[len(old) :]

    def flush_all(self) -> int:
        return sum(s.flush() for s in self.states.values() if not s.unlinked)

    def unsynced(self) -> list[dict[str, object]]:
        return [
            {
                "path": s.path,
                "dropped_bytes": s.unsynced_bytes(),
                "size": s.size,
                "synced_size": s.synced_size,
            }
            for s in self.states.values()
            if s.dirty and not s.unlinked
        ]

    def cut(self) -> list[dict[str, object]]:
        """Drop every unsynced byte and close every file: the power is off."""
        lost = [s.drop() for s in self.states.values() if s.dirty and not s.unlinked]
        for state in self.states.values():
            os.close(state.fd)
        self.states.clear()
        self.handles.clear()
        return sorted(lost, key=lambda f: str(f["path"]))
