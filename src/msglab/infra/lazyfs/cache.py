"""What the lazy filesystem has not yet written to its backing folder: dirty pages per file.

A ``FileState`` stands for one backing file (one inode: hard links and renames keep it) while
it is open or holds unsynced data. The backing file is the *disk*: its first ``base`` bytes
are what the application would find after a power cut. Writes and truncations go to pages in
memory (``PAGE`` bytes each, filled from the backing file where they overlap it); ``flush``
writes them to the backing file (an ``fsync``), ``drop`` forgets them (a power cut).
No FUSE here: this module is plain file I/O, testable alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

PAGE = 16 * 1024


@dataclass
class Page:
    data: bytearray
    lo: int  # the bytes written since the last flush: data[lo:hi]
    hi: int


@dataclass(eq=False)
class FileState:
    """One backing file, opened read-write (read-only when that is all we may)."""

    fd: int
    path: str  # as seen under the mount point, for reports
    size: int  # what the application sees
    base: int  # bytes of the backing file still valid (the synced content)
    synced_size: int  # the backing file's size at the last flush
    opens: int = 0
    unlinked: bool = False
    mtime_ns: int | None = None
    pages: dict[int, Page] = field(default_factory=dict)

    @classmethod
    def open(cls, fd: int, path: str) -> FileState:
        size = os.fstat(fd).st_size
        return cls(fd=fd, path=path, size=size, base=size, synced_size=size)

    @property
    def dirty(self) -> bool:
        return bool(self.pages) or self.size != self.synced_size or self.base != self.size

    def unsynced_bytes(self) -> int:
        """Bytes written since the last flush, within the current size."""
        total = 0
        for pno, page in self.pages.items():
            start = pno * PAGE
            total += max(0, min(page.hi, self.size - start) - page.lo)
        return total

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        if not self.pages and end <= self.base:
            return os.pread(self.fd, end - offset, offset)
        buf = bytearray(end - offset)
        if offset < self.base:
            got = os.pread(self.fd, min(end, self.base) - offset, offset)
            buf[: len(got)] = got
        for pno in range(offset // PAGE, (end - 1) // PAGE + 1):
            page = self.pages.get(pno)
            if page is not None:
                start = pno * PAGE
                a, b = max(offset, start), min(end, start + PAGE)
                buf[a - offset : b - offset] = page.data[a - start : b - start]
        return bytes(buf)

    def _page(self, pno: int) -> bytearray:
        data = bytearray(PAGE)
        start = pno * PAGE
        if start < self.base:
            got = os.pread(self.fd, min(PAGE, self.base - start), start)
            data[: len(got)] = got
        return data

    def write(self, data: bytes, offset: int, mtime_ns: int) -> int:
        end = offset + len(data)
        view = memoryview(data)
        pos = offset
        while pos < end:
            pno = pos // PAGE
            start = pno * PAGE
            a, b = pos - start, min(PAGE, end - start)
            page = self.pages.get(pno)
            if page is None:
                page = self.pages[pno] = Page(self._page(pno), a, b)
            else:
                page.lo, page.hi = min(page.lo, a), max(page.hi, b)
            page.data[a:b] = view[pos - offset : pos - offset + b - a]
            pos = start + b
        self.size = max(self.size, end)
        self.mtime_ns = mtime_ns
        return len(data)

    def truncate(self, length: int, mtime_ns: int) -> None:
        if length < self.size:
            self.base = min(self.base, length)
            for pno in [p for p in self.pages if p * PAGE >= length]:
                del self.pages[pno]
            last = self.pages.get(length // PAGE)
            if last is not None:
                cut = length % PAGE
                last.data[cut:] = bytes(PAGE - cut)
                last.hi = max(last.lo, min(last.hi, cut))
        self.size = length
        self.mtime_ns = mtime_ns

    def flush(self) -> int:
        """Write what is dirty to the backing file; the bytes written."""
        if not self.dirty:
            return 0
        if self.base < self.synced_size:
            os.ftruncate(self.fd, self.base)
        written = 0
        for pno in sorted(self.pages):
            start = pno * PAGE
            n = min(PAGE, self.size - start)
            view = memoryview(self.pages[pno].data)[:n]
            while view:
                done = os.pwrite(self.fd, view, start)
                view, start, written = view[done:], start + done, written + done
        if os.fstat(self.fd).st_size != self.size:
            os.ftruncate(self.fd, self.size)
        self.pages.clear()
        self.base = self.synced_size = self.size
        return written

    def drop(self) -> dict[str, object]:
        """Forget what was not flushed (a power cut); what was lost, for the report."""
        lost: dict[str, object] = {
            "path": self.path,
            "dropped_bytes": self.unsynced_bytes(),
            "size": self.size,
            "synced_size": self.synced_size,
        }
        self.pages.clear()
        self.size = self.base = self.synced_size
        return lost
