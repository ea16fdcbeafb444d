"""A damaged batch file (the files transport only): bytes garbled mid-file, or the file cut."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import unquote, urlsplit

from msglab.lab.faults.base import Context, Fault
from msglab.lab.workers.spec import topic_of

if TYPE_CHECKING:
    from msglab.lab.scenario import Scenario

FIND_S = 10.0  # how long inject looks for a batch that no group has taken yet
GARBLED = 16  # bytes inverted in the middle of the data file


class Corrupt(Fault):
    """After ``kill_after`` sends, the newest batch that no consumer group has taken is damaged
    on disk, as a disk or a copy tool may: ``garble`` inverts 16 bytes in the middle of its
    data file, ``truncate`` cuts it in half (the run's seed picks one). While it does so it
    holds each group's claim lock of the batch (the layout of ``msglab.brokers.files``), so no
    consumer reads it half damaged. Its record names the batch and the ids it held; the
    consumer that claims it finds it does not match its manifest and quarantines it with the
    reason: those messages are lost, and named."""

    name: ClassVar[str] = "corrupt"
    does: ClassVar[str] = (
        "damage a batch file after `kill_after` sends (garble bytes mid-file or truncate it); "
        "files only"
    )

    def refusal(self, scenario: Scenario) -> str | None:
        if scenario.transport != "files":
            return (
                f"{self.name} damages a batch file; only -t files has them, not "
                f"{scenario.transport}"
            )
        return super().refusal(scenario)

    def fired_by_orchestrator(self, scenario: Scenario) -> bool:
        return True

    def inject(self, ctx: Context) -> None:
        tdir = Path(unquote(urlsplit(ctx.url).path)) / topic_of(ctx.scenario.run_id)
        how = random.Random(ctx.scenario.seed).choice(("garble", "truncate"))
        deadline = time.monotonic() + FIND_S
        while time.monotonic() < deadline:
            for name in sorted(_batches(tdir), reverse=True):
                locks = _lock_all(tdir, name)
                if locks is None:
                    continue
                try:
                    detail = _damage(tdir / f"{name}.jsonl", how)
                finally:
                    for fd in locks:
                        os.close(fd)
                ctx.log.record(self.name, "corrupt", name, how=how, **detail)
                return
            time.sleep(0.01)
        ctx.log.record(self.name, "corrupt", str(tdir), note=f"no untaken batch in {FIND_S:g} s")

    def hold(self, ctx: Context) -> None:
        """A moment: nothing to heal, no wait."""
        self.inject(ctx)


def _batches(tdir: Path) -> list[str]:
    return [p.name[: -len(".manifest")] for p in tdir.glob("[!.]*.manifest")]


def _lock_all(tdir: Path, name: str) -> list[int] | None:
    """Each group's claim lock of batch ``name``, or None when a group has taken it (its lock
    held, a progress or done file: looked at again once locked, a member may just have
    finished)."""
    locks: list[int] = []
    for g in (g for g in (tdir / ".groups").glob("*") if g.is_dir()):
        fd = os.open(g / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        locks.append(fd)
        with contextlib.suppress(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not any((g / f"{name}{s}").exists() for s in (".done", ".progress")):
                continue
        for fd in locks:
            os.close(fd)
        return None
    return locks


def _damage(data: Path, how: str) -> dict[str, object]:
    """Damage ``data`` in place; what it held (ids, bytes) and what was done."""
    content = data.read_bytes()
    ids = []
    for line in content.splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            ids.append(str(json.loads(line)["id"]))
    middle = len(content) // 2
    if how == "truncate":
        os.truncate(data, middle)
    else:
        garbled = bytes(b ^ 0xFF for b in content[middle : middle + GARBLED])
        fd = os.open(data, os.O_WRONLY)
        try:
            os.pwrite(fd, garbled, middle)
            os.fsync(fd)
        finally:
            os.close(fd)
    return {"bytes": len(content), "at": middle, "messages": len(ids), "ids": ids}


FAULTS: tuple[Fault, ...] = (Corrupt(),)
