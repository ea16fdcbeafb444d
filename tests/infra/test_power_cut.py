"""Power cuts of real servers on the lazy filesystem: what a server fsynced survives, the rest
does not, and no fault leaves a mount behind."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from msglab.errors import ServerStartError
from msglab.infra import process
from msglab.infra.lazyfs.mount import mounted
from msglab.infra.native import NativeBackend
from tests.infra.test_lifecycle import private_settings

pytestmark = [pytest.mark.redis, pytest.mark.lazyfs]
KEYS = 2000


def no_mount_under(home: Path) -> bool:
    return str(home) not in Path("/proc/mounts").read_text()


@pytest.fixture
def home(tmp_path: Path, lazyfs_available: None) -> Iterator[Path]:
    yield tmp_path
    NativeBackend(private_settings(tmp_path)).down(["redis"])
    assert no_mount_under(tmp_path)


@pytest.mark.parametrize(("policy", "all_kept"), [("no", False), ("always", True)])
def test_redis_keeps_after_a_power_cut_only_what_it_fsynced(
    home: Path, policy: str, all_kept: bool
) -> None:
    settings = dataclasses.replace(private_settings(home), redis_appendfsync=policy)
    backend = NativeBackend(settings)
    backend.up(["redis"], lazyfs=True)
    (status,) = backend.status(["redis"])
    assert status.lazyfs and status.healthy
    client = redis.Redis(port=settings.ports["redis"])
    for i in range(KEYS):
        client.set(f"key-{i}", "value")
    report = backend.power_cut("redis")
    (status,) = backend.status(["redis"])
    assert status.pid is None and status.lazyfs
    assert not mounted(home / "redis" / "data")
    assert (home / "redis" / "power-cuts.jsonl").read_text().count("\n") == 1
    backend.restart("redis")
    kept = client.dbsize()
    client.close()
    if all_kept:
        assert kept == KEYS
        assert report.dropped_bytes == 0
    else:
        assert kept < KEYS
        assert report.dropped_bytes > 0
        assert any(f.path.startswith("appendonlydir/") for f in report.files), report
    backend.down(["redis"])
    assert not (home / "redis" / "data.backing").exists()  # the data is back on the plain disk
    assert (home / "redis" / "data" / "appendonlydir").is_dir()


def test_a_failed_start_on_the_lazy_filesystem_unmounts(home: Path) -> None:
    backend = NativeBackend(private_settings(home))
    aof = home / "redis" / "data" / "appendonlydir"
    aof.mkdir(parents=True)
    (aof / "appendonly.aof.manifest").write_text("this is not a manifest\n")
    with pytest.raises(ServerStartError, match="last lines of the log"):
        backend.up(["redis"], lazyfs=True)
    assert no_mount_under(home)
    assert backend.service("redis").pid() is None


def test_an_interrupted_start_kills_the_server_and_unmounts(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = NativeBackend(private_settings(home))
    svc = backend.service("redis")

    def ctrl_c(timeout_s: float) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(svc, "ping", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        svc.up(lazyfs=True)
    assert no_mount_under(home)
    assert not [
        p
        for p in process.descendants(1)
        if process.process_name(p) == "redis-server"
        and str(home) in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
    ]


def test_lazyfs_without_fuse_fails_at_once_naming_what_is_missing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "msglab", "infra", "up", "redis", "--lazyfs"],
        capture_output=True,
        text=True,
        env={**os.environ, "MSGLAB_HOME": str(tmp_path), "PATH": str(tmp_path / "bin")},
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "fusermount3" in result.stderr
    assert not (tmp_path / "redis").exists()
