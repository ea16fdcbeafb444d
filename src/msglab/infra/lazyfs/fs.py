"""The lazy filesystem's FUSE operations (mfusepy, the one place msglab imports it).

A passthrough of the backing folder in which file *data* (writes, truncations) stays in
``Files`` until the file is fsynced, fdatasynced, or opened with O_SYNC / O_DSYNC, or until a
clean unmount. Names (create, mkdir, rename, unlink, link, symlink) and attributes (chmod,
chown, times) reach the backing folder at once: directory fsync is not modelled, so a rename
survives a cut with or without one. Files a caller creates are given the caller's owner, so
that a server running as another user (PostgreSQL) finds them its own.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from msglab.extras import driver_import
from msglab.infra.lazyfs import control
from msglab.infra.lazyfs.cache import FileState
from msglab.infra.lazyfs.files import Files

with driver_import("lazyfs", __name__):
    import mfusepy

FALLOC_FL_KEEP_SIZE = 0x01
_STAT_KEYS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_rdev")
_STAT_KEYS_MORE = ("st_blocks", "st_blksize")


class LazyFS(mfusepy.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, backing: Path, control_path: Path) -> None:
        self.files = Files(str(backing.resolve()))
        self.control_path = control_path
        self._mutex = threading.RLock()
        self.cut_done = False
        self._stop_control: Callable[[], None] | None = None

    @contextmanager
    def _live(self) -> Iterator[None]:
        with self._mutex:
            if self.cut_done:
                raise mfusepy.FuseOSError(errno.EIO)
            yield

    def _own(self, path: str) -> None:
        """Give a new file or folder to the caller, as the kernel would (we run as root)."""
        uid, gid, _ = mfusepy.fuse_get_context()
        if os.geteuid() == 0 and (uid, gid) != (0, 0):
            os.lchown(self.files.real(path), uid, gid)

    # -- the control channel ----------------------------------------------------------------

    def init(self, path: str) -> None:
        self._stop_control = control.serve(self.control_path, self.command)

    def command(self, name: str) -> dict[str, Any]:
        if name == "ping":
            return {"ok": True, "cut": self.cut_done}
        with self._mutex:
            if name == "unsynced":
                return {"files": [] if self.cut_done else self.files.unsynced()}
            if name == "sync":
                return {"written": 0 if self.cut_done else self.files.flush_all()}
            if name == "cut":
                lost = [] if self.cut_done else self.files.cut()
                self.cut_done = True
                return {"files": lost}
        raise ValueError(f"unknown command {name!r}")

    def destroy(self, path: str) -> None:
        with self._mutex:
            if not self.cut_done:
                self.files.flush_all()
                self.files.cut()  # nothing left to drop: closes the files
                self.cut_done = True
        if self._stop_control is not None:
            self._stop_control()

    # -- attributes and names: straight to the backing folder ------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self._live():
            state: FileState | None
            if fh is not None and fh in self.files.handles:
                state = self.files.handle(fh)[0]
                st = os.fstat(state.fd)
            else:
                st, state = self.files.by_path(path)
            attrs = {k: getattr(st, k) for k in (*_STAT_KEYS, *_STAT_KEYS_MORE)}
            attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
            if state is not None:
                attrs["st_size"] = state.size
                attrs["st_blocks"] = max(st.st_blocks, (state.size + 511) // 512)
                if state.mtime_ns is not None:
                    attrs["st_mtime"] = state.mtime_ns
            return attrs

    def readlink(self, path: str) -> str:
        with self._live():
            return os.readlink(self.files.real(path))

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        """Each entry with its inode: with ``use_ino`` an entry without one (0) is skipped by
        readdir(3)."""
        with self._live():
            real = self.files.real(path)
            entries = []
            for name, where in ((".", real), ("..", os.path.join(real, ".."))):
                st = os.lstat(where)
                entries.append((name, {"st_ino": st.st_ino, "st_mode": st.st_mode}, 0))
            with os.scandir(real) as found:
                for entry in found:
                    kind = stat.S_IFDIR if entry.is_dir(follow_symlinks=False) else stat.S_IFREG
                    if entry.is_symlink():
                        kind = stat.S_IFLNK
                    entries.append((entry.name, {"st_ino": entry.inode(), "st_mode": kind}, 0))
            return entries

    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self.files.real(path))
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree")
        return {k: getattr(sv, k) for k in (*keys, "f_favail", "f_flag", "f_namemax")}

    def mknod(self, path: str, mode: int, dev: int) -> int:
        with self._live():
            os.mknod(self.files.real(path), mode, dev)
            self._own(path)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        with self._live():
            os.mkdir(self.files.real(path), mode)
            self._own(path)
        return 0

    def symlink(self, target: str, source: str) -> int:
        with self._live():
            os.symlink(source, self.files.real(target))
            self._own(target)
        return 0

    def link(self, target: str, source: str) -> int:
        with self._live():
            os.link(self.files.real(source), self.files.real(target))
        return 0

    def unlink(self, path: str) -> int:
        with self._live():
            st = os.lstat(self.files.real(path))
            os.unlink(self.files.real(path))
            self.files.removed(st)
        return 0

    def rmdir(self, path: str) -> int:
        with self._live():
            os.rmdir(self.files.real(path))
        return 0

    def rename(self, old: str, new: str) -> int:
        with self._live():
            try:
                replaced: os.stat_result | None = os.lstat(self.files.real(new))
            except FileNotFoundError:
                replaced = None
            os.rename(self.files.real(old), self.files.real(new))
            if replaced is not None and not stat.S_ISDIR(replaced.st_mode):
                self.files.removed(replaced)
            self.files.renamed(old, new)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        with self._live():
            os.chmod(self.files.real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        with self._live():
            os.lchown(self.files.real(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        with self._live():
            _, state = self.files.by_path(path)
            if times is None:
                os.utime(self.files.real(path), follow_symlinks=False)
            else:
                os.utime(self.files.real(path), ns=times, follow_symlinks=False)
            if state is not None:
                state.mtime_ns = times[1] if times else time.time_ns()
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        return 0  # names reached the backing folder when they were made

    # -- file data: kept until fsync --------------------------------------------------------

    def create(self, path: str, mode: int, flags: int) -> int:
        with self._live():
            fh, _ = self.files.open(path, flags, mode)
            self._own(path)
            return fh

    def open(self, path: str, flags: int) -> int:
        with self._live():
            return self.files.open(path, flags)[0]

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._live():
            return self.files.handle(fh)[0].read(offset, size)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._live():
            state, sync = self.files.handle(fh)
            written = state.write(data, offset, time.time_ns())
            if sync:
                state.flush()
            return written

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        with self._live():
            if fh is not None:
                self.files.handle(fh)[0].truncate(length, time.time_ns())
                return 0
            if path is None:
                raise mfusepy.FuseOSError(errno.EBADF)
            fh, _ = self.files.open(path, os.O_WRONLY)
            try:
                self.files.handle(fh)[0].truncate(length, time.time_ns())
            finally:
                self.files.release(fh)
        return 0

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
        with self._live():
            if mode & ~FALLOC_FL_KEEP_SIZE:
                raise mfusepy.FuseOSError(errno.EOPNOTSUPP)
            state = self.files.handle(fh)[0]
            if not mode & FALLOC_FL_KEEP_SIZE and offset + size > state.size:
                state.truncate(offset + size, time.time_ns())
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self._live():
            self.files.handle(fh)[0].flush()
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0  # close(2) is not fsync(2)

    def release(self, path: str, fh: int) -> int:
        with self._mutex:
            if fh in self.files.handles:
                self.files.release(fh)
        return 0


def run(mountpoint: Path, backing: Path, control_path: Path, allow_other: bool) -> None:
    """Mount and serve in the foreground until unmounted."""
    os.umask(0)  # the caller's mode arrives with its umask applied
    mfusepy.FUSE(
        LazyFS(backing, control_path),
        str(mountpoint),
        foreground=True,
        fsname="msglab-lazyfs",
        subtype="msglab-lazyfs",
        default_permissions=True,
        allow_other=allow_other,
        auto_unmount=True,
        use_ino=True,
        hard_remove=True,
    )
