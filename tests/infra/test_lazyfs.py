"""The lazy filesystem alone: what a cut keeps (fsynced data) and drops (everything else)."""

from __future__ import annotations

import mmap
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from msglab.infra.lazyfs import LazyMount
from msglab.infra.lazyfs.mount import mounted

pytestmark = pytest.mark.lazyfs


@pytest.fixture
def lazy(tmp_path: Path, lazyfs_available: None) -> Iterator[LazyMount]:
    mount = LazyMount(tmp_path / "mnt", tmp_path / "back", tmp_path)
    mount.mount(allow_other=os.geteuid() == 0)
    try:
        yield mount
    finally:
        mount.unmount()
        assert str(mount.mountpoint) not in Path("/proc/mounts").read_text()


def write(path: Path, data: bytes, sync: bool = False, mode: str = "wb") -> None:
    with open(path, mode) as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remount(lazy: LazyMount) -> None:
    lazy.mount(allow_other=os.geteuid() == 0)


def test_an_unsynced_write_is_dropped_and_reported(lazy: LazyMount) -> None:
    write(lazy.mountpoint / "log", b"a" * 1000, sync=True)
    write(lazy.mountpoint / "log", b"b" * 5000, mode="ab")
    assert (lazy.mountpoint / "log").stat().st_size == 6000
    assert (lazy.backing / "log").stat().st_size == 1000  # not yet on the "disk"
    lost = lazy.cut()
    assert lost == [{"path": "/log", "dropped_bytes": 5000, "size": 6000, "synced_size": 1000}]
    assert not mounted(lazy.mountpoint)
    remount(lazy)
    assert (lazy.mountpoint / "log").read_bytes() == b"a" * 1000


def test_folders_list_as_the_backing_folder(lazy: LazyMount) -> None:
    (lazy.mountpoint / "sub").mkdir()
    write(lazy.mountpoint / "sub" / "f", b"1")
    os.symlink("f", lazy.mountpoint / "sub" / "link")
    assert sorted(os.listdir(lazy.mountpoint / "sub")) == ["f", "link"]
    assert sorted(os.listdir(lazy.mountpoint)) == sorted(os.listdir(lazy.backing)) == ["sub"]
    assert (lazy.mountpoint / "sub" / "link").read_bytes() == b"1"


def test_a_synced_file_is_whole_after_a_cut(lazy: LazyMount) -> None:
    data = os.urandom(300_000)  # many pages, not page-aligned
    write(lazy.mountpoint / "whole", data, sync=True)
    assert lazy.cut() == []
    remount(lazy)
    assert (lazy.mountpoint / "whole").read_bytes() == data


def test_a_new_unsynced_file_is_left_empty(lazy: LazyMount) -> None:
    write(lazy.mountpoint / "new", b"x" * 100)
    (lost,) = lazy.cut()
    assert lost["dropped_bytes"] == 100
    remount(lazy)
    assert (lazy.mountpoint / "new").read_bytes() == b""


def test_fsync_then_rename_then_directory_fsync_survives(lazy: LazyMount) -> None:
    folder = lazy.mountpoint / "d"
    folder.mkdir()
    write(folder / "batch.tmp", b"committed", sync=True)
    os.rename(folder / "batch.tmp", folder / "batch")
    fsync_dir(folder)
    write(folder / "other.tmp", b"never synced")
    os.rename(folder / "other.tmp", folder / "other")  # the data follows the file, unsynced
    lost = lazy.cut()
    assert [f["path"] for f in lost] == ["/d/other"]
    remount(lazy)
    assert (folder / "batch").read_bytes() == b"committed"
    assert not (folder / "batch.tmp").exists()
    assert (folder / "other").read_bytes() == b""


def test_truncate_is_lazy_too(lazy: LazyMount) -> None:
    path = lazy.mountpoint / "t"
    write(path, b"1" * 10_000, sync=True)
    os.truncate(path, 100)
    with open(path, "r+b") as f:
        f.seek(20_000)
        f.write(b"end")  # the gap reads as zeros, not as the old bytes
    assert path.read_bytes() == b"1" * 100 + bytes(19_900) + b"end"
    lazy.cut()
    remount(lazy)
    assert path.read_bytes() == b"1" * 10_000  # the truncation was not synced either
    os.truncate(path, 100)
    with open(path, "r+b") as f:
        os.fsync(f.fileno())
    lazy.cut()
    remount(lazy)
    assert path.read_bytes() == b"1" * 100


def test_mmap_writes_survive_with_msync_only(lazy: LazyMount) -> None:
    synced, unsynced = lazy.mountpoint / "synced.idx", lazy.mountpoint / "unsynced.idx"
    for path in (synced, unsynced):
        write(path, bytes(8192), sync=True)
    for path, flush in ((synced, True), (unsynced, False)):
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 8192) as mapped:
            mapped[100:105] = b"hello"
            if flush:
                mapped.flush()  # msync(MS_SYNC)
    lost = lazy.cut()
    assert [f["path"] for f in lost] == ["/unsynced.idx"]
    remount(lazy)
    assert synced.read_bytes()[100:105] == b"hello"
    assert unsynced.read_bytes() == bytes(8192)


def test_o_append_sparse_files_and_o_dsync(lazy: LazyMount) -> None:
    log = lazy.mountpoint / "aof"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, b"one,")
    os.pwrite(fd, b"two,", 0)  # O_APPEND: appended whatever the offset says
    os.fsync(fd)
    os.close(fd)
    sparse = lazy.mountpoint / "sparse"
    with open(sparse, "wb") as f:
        f.seek(1 << 20)
        f.write(b"tail")
        f.flush()
        os.fsync(f.fileno())
    dsync = os.open(lazy.mountpoint / "wal", os.O_WRONLY | os.O_CREAT | os.O_DSYNC, 0o600)
    os.write(dsync, b"durable at once")
    os.close(dsync)
    assert lazy.cut() == []
    remount(lazy)
    assert log.read_bytes() == b"one,two,"
    assert sparse.read_bytes() == bytes(1 << 20) + b"tail"
    assert (lazy.backing / "sparse").stat().st_blocks * 512 < 1 << 20  # still a hole
    assert (lazy.mountpoint / "wal").read_bytes() == b"durable at once"


def test_a_clean_unmount_writes_everything(lazy: LazyMount) -> None:
    write(lazy.mountpoint / "f", b"z" * 70_000)
    assert lazy.unsynced()[0]["dropped_bytes"] == 70_000
    lazy.unmount()
    assert (lazy.backing / "f").read_bytes() == b"z" * 70_000
    remount(lazy)


@pytest.fixture
def shared(lazyfs_available: None) -> Iterator[LazyMount]:
    """A mount that other users can reach (pytest's folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="msglab-lazyfs-"))
    folder.chmod(0o755)
    mount = LazyMount(folder / "mnt", folder / "back", folder)
    mount.mount(allow_other=True)
    try:
        yield mount
    finally:
        mount.unmount()
        shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating files as another user needs root")
def test_files_a_user_creates_are_that_users(shared: LazyMount) -> None:
    lazy = shared
    os.chmod(lazy.mountpoint, 0o777)
    path = lazy.mountpoint / "theirs"
    subprocess.run(
        ["sh", "-c", f"echo hi > {path} && mkdir {path}.d && chmod 700 {path}.d"],
        user="nobody",
        check=True,
    )
    for name in ("theirs", "theirs.d"):
        assert (lazy.backing / name).stat().st_uid == (lazy.mountpoint / name).stat().st_uid
        assert (lazy.backing / name).stat().st_uid != 0
    assert (lazy.mountpoint / "theirs.d").stat().st_mode & 0o777 == 0o700
    denied = subprocess.run(["cat", str(path)], user="daemon", capture_output=True)
    assert denied.returncode == 0  # 0644 from the umask: others may read
    os.chmod(path, 0o600)
    denied = subprocess.run(["cat", str(path)], user="daemon", capture_output=True)
    assert denied.returncode != 0  # the kernel checks permissions (default_permissions)
