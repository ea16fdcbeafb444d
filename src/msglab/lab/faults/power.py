"""Power cuts: every write not fsynced is dropped, as when the power goes (the data on msglab's
lazy filesystem, ``msglab.infra.lazyfs``).

On a broker (and PostgreSQL) the cut hits the server: SIGKILL, the unsynced writes dropped, a
restart after ``down_s``; the clients run elsewhere and reconnect. The files transport has no
server: its exchange folder is on the cut machine, with the producers and consumers that write
into it, so the cut SIGKILLs every worker of the run as well; after ``down_s`` the folder is
mounted again and fresh consumers take over (what the producers had not sent is never sent).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote, urlsplit

from msglab.infra import Backend, process
from msglab.infra.lazyfs import CutReport
from msglab.infra.lazyfs.disk import DataDisk, folder_disk
from msglab.lab.faults.base import BROKER, DATABASE, Context, Fault
from msglab.lab.faults.cluster import ClusterFault, cut_nodes
from msglab.lab.faults.server import ServerKill

if TYPE_CHECKING:
    from msglab.lab.scenario import Scenario

TOP_FILES = 20  # files named in the cut's record, the ones that lost the most
FILES = "files"


class PowerCut(ServerKill):
    """The run puts the server (or the files folder) on the lazy filesystem first if it is
    not, and moves it back to the plain disk after; the cut at the kill point records the bytes
    dropped per file; the server comes back after ``down_s`` on the same filesystem
    (``ServerKill.heal``: its ``up`` mounts it again)."""

    name: ClassVar[str] = "power-cut"
    does: ClassVar[str] = (
        "SIGKILL the broker after `kill_after` sends and drop every write it had not fsynced "
        "(its data on msglab's lazy filesystem), restart after `down_s`; files: the exchange "
        "folder's machine, with the run's producers and consumers"
    )
    simulated: ClassVar[str | None] = (
        "power cut: SIGKILL of the server, and every write it had not fsynced dropped"
    )

    def refusal(self, scenario: Scenario) -> str | None:
        if scenario.transport == FILES:
            if scenario.pattern != "direct":
                return f"{self.name} on files applies to --pattern direct"
            return None
        if scenario.cluster:  # the nodes --cut names, not a single broker
            return Fault.refusal(self, scenario)
        return super().refusal(scenario)

    def storage(self, scenario: Scenario) -> str | None:
        return BROKER

    def replaced(self, scenario: Scenario) -> list[tuple[str, str]]:
        if scenario.transport == FILES:
            return [(f"c{i}", "consumer") for i in range(scenario.consumers)]
        return []

    def prepare(self, infra: Backend, scenario: Scenario, url: str) -> bool:
        if scenario.transport == FILES:
            disk = _disk(url)
            disk.enter()  # nothing to move when a run cut short left it there
            disk.attach(allow_other=False)
            return True
        service = self.server(scenario)
        if all(status.lazyfs for status in infra.status([service])):  # a cluster: each node
            return False
        infra.down([service])
        infra.up([service], lazyfs=True)
        return True

    def finish(self, infra: Backend, scenario: Scenario, url: str) -> None:
        if scenario.transport == FILES:
            _disk(url).leave()  # a clean unmount: everything written reaches the disk
            return
        service = self.server(scenario)
        infra.down([service])  # a clean unmount: everything written reaches the disk
        infra.up([service])

    def inject(self, ctx: Context) -> None:
        if ctx.scenario.cluster:
            nodes, why = cut_nodes(ctx)
            cuts = ClusterFault.cluster(ctx).power_cut(nodes)
            ctx.memo[self.name] = nodes
            for node, cut in zip(nodes, cuts, strict=True):
                self._record(ctx, f"{ctx.scenario.service}/{node}", cut, node=node, why=why)
            return
        if ctx.scenario.transport != FILES:
            service = self.server(ctx.scenario)
            self._record(ctx, service, ctx.infra.power_cut(service))
            return
        workers = [p.pid for p in ctx.workers.values() if p.poll() is None]
        for pid in workers:  # the machine goes down with everything on it, at once
            os.kill(pid, signal.SIGKILL)
        for pid in workers:
            process.wait_gone(pid, 10.0)
        cut = _disk(ctx.url).power_cut(FILES, None)
        self._record(ctx, FILES, cut, workers=len(workers))

    def heal(self, ctx: Context) -> None:
        if ctx.scenario.cluster:
            nodes = ctx.memo.pop(self.name, [])
            if nodes:
                report = ClusterFault.cluster(ctx).restart(nodes)
                for node in nodes:
                    target = f"{ctx.scenario.service}/{node}"
                    ctx.log.record(self.name, "restart", target, seconds=round(report.seconds, 3))
            return
        if ctx.scenario.transport != FILES:
            super().heal(ctx)
            return
        _disk(ctx.url).attach(allow_other=False)
        ctx.log.record(self.name, "restart", FILES, note="the folder is mounted again")

    def _record(self, ctx: Context, target: str, cut: CutReport, **more: Any) -> None:
        worst = sorted(cut.files, key=lambda f: -f.dropped_bytes)[:TOP_FILES]
        ctx.log.record(
            self.name,
            "kill",
            target,
            pids=list(cut.killed),
            signal="SIGKILL",
            dropped_bytes=cut.dropped_bytes,
            files_dropped=len(cut.files),
            files=[
                {
                    "path": f.path,
                    "dropped_bytes": f.dropped_bytes,
                    "size": f.size,
                    "synced_size": f.synced_size,
                }
                for f in worst
            ],
            note="a power cut: writes not fsynced were dropped",
            **more,
        )


def _disk(url: str) -> DataDisk:
    """The files transport's folder (``file:///abs/dir``) as a disk."""
    return folder_disk(Path(unquote(urlsplit(url).path)))


class DbPowerCut(PowerCut):
    name: ClassVar[str] = "db-power-cut"
    does: ClassVar[str] = (
        "cut PostgreSQL's power after `kill_after` sends (SIGKILL, and every write it had not "
        "fsynced dropped), restart after `down_s`"
    )
    needs_server: ClassVar[bool] = False
    target: ClassVar[str | None] = "postgres"

    def refusal(self, scenario: Scenario) -> str | None:
        return ServerKill.refusal(self, scenario)

    def storage(self, scenario: Scenario) -> str | None:
        """What PostgreSQL kept of what it committed: the run's ``lab_orders`` rows (a message
        is sent once its business transaction committed: dual-write, outbox, cdc)."""
        return DATABASE if scenario.commits_first else None

    def replaced(self, scenario: Scenario) -> list[tuple[str, str]]:
        return []


FAULTS: tuple[ServerKill, ...] = (PowerCut(), DbPowerCut())
