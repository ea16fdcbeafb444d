"""Power cuts: every write not fsynced is dropped, as when the power goes (the data on msglab's
lazy filesystem, ``msglab.infra.lazyfs``).

What loses power is one of three (``Grid``):

* a server (``ServerGrid``: the broker, or PostgreSQL for ``db-power-cut``): SIGKILL, the
  unsynced writes dropped, a restart after ``down_s``; the clients run elsewhere and reconnect;
* the files transport's folder (``FolderGrid``): it has no server, its exchange folder is on
  the cut machine with the producers and consumers that write into it, so the cut SIGKILLs every
  worker of the run as well; after ``down_s`` the folder is mounted again and fresh consumers
  take over (what the producers had not sent is never sent);
* nodes of a cluster (``ClusterGrid``, ``--cut leader|one|all``): frozen together, cut, and
  restarted after ``down_s``.

The run puts what will be cut on the lazy filesystem first if it is not (``prepare``) and moves
it back to the plain disk after (``finish``); the cut records the bytes dropped per file.
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


class Grid:
    """What loses power in a run: put on the lazy filesystem, cut, brought back, put back."""

    def prepare(self, fault: PowerCut, infra: Backend, scenario: Scenario, url: str) -> bool:
        """Onto the lazy filesystem; True when ``finish`` must move it back."""
        service = fault.server(scenario)
        if all(status.lazyfs for status in infra.status([service])):  # a cluster: each node
            return False
        infra.down([service])
        infra.up([service], lazyfs=True)
        return True

    def finish(self, fault: PowerCut, infra: Backend, scenario: Scenario, url: str) -> None:
        service = fault.server(scenario)
        infra.down([service])  # a clean unmount: everything written reaches the disk
        infra.up([service])

    def cut(self, fault: PowerCut, ctx: Context) -> None:
        raise NotImplementedError

    def back(self, fault: PowerCut, ctx: Context) -> None:
        raise NotImplementedError

    def replaced(self, scenario: Scenario) -> list[tuple[str, str]]:
        return []


class ServerGrid(Grid):
    def cut(self, fault: PowerCut, ctx: Context) -> None:
        service = fault.server(ctx.scenario)
        fault.record(ctx, service, ctx.infra.power_cut(service))

    def back(self, fault: PowerCut, ctx: Context) -> None:
        ServerKill.heal(fault, ctx)  # its ``up`` mounts the lazy filesystem again


class FolderGrid(Grid):
    def prepare(self, fault: PowerCut, infra: Backend, scenario: Scenario, url: str) -> bool:
        disk = _disk(url)
        disk.enter()  # nothing to move when a run cut short left it there
        disk.attach(allow_other=False)
        return True

    def finish(self, fault: PowerCut, infra: Backend, scenario: Scenario, url: str) -> None:
        _disk(url).leave()  # a clean unmount: everything written reaches the disk

    def cut(self, fault: PowerCut, ctx: Context) -> None:
        workers = [p.pid for p in ctx.workers.values() if p.poll() is None]
        for pid in workers:  # the machine goes down with everything on it, at once
            os.kill(pid, signal.SIGKILL)
        for pid in workers:
            process.wait_gone(pid, 10.0)
        cut = _disk(ctx.url).power_cut(FILES, None)
        fault.record(ctx, FILES, cut, workers=len(workers))

    def back(self, fault: PowerCut, ctx: Context) -> None:
        _disk(ctx.url).attach(allow_other=False)
        ctx.log.record(fault.name, "restart", FILES, note="the folder is mounted again")

    def replaced(self, scenario: Scenario) -> list[tuple[str, str]]:
        return [(f"c{i}", "consumer") for i in range(scenario.consumers)]


class ClusterGrid(Grid):
    def cut(self, fault: PowerCut, ctx: Context) -> None:
        nodes, why = cut_nodes(ctx)
        cuts = ClusterFault.cluster(ctx).power_cut(nodes)
        ctx.memo[fault.name] = nodes
        for node, cut in zip(nodes, cuts, strict=True):
            fault.record(ctx, f"{ctx.scenario.service}/{node}", cut, node=node, why=why)

    def back(self, fault: PowerCut, ctx: Context) -> None:
        nodes = ctx.memo.pop(fault.name, [])
        if not nodes:
            return
        report = ClusterFault.cluster(ctx).restart(nodes)
        for node in nodes:
            target = f"{ctx.scenario.service}/{node}"
            ctx.log.record(fault.name, "restart", target, seconds=round(report.seconds, 3))


class PowerCut(ServerKill):
    """The power of the run's broker goes (its folder for files, the ``--cut`` nodes of a
    cluster); ``target`` names another server instead (``db-power-cut``: PostgreSQL)."""

    name: ClassVar[str] = "power-cut"
    does: ClassVar[str] = (
        "SIGKILL the broker after `kill_after` sends and drop every write it had not fsynced "
        "(its data on msglab's lazy filesystem), restart after `down_s`; files: the exchange "
        "folder's machine, with the run's producers and consumers; --cluster: the --cut nodes"
    )
    simulated: ClassVar[str | None] = (
        "power cut: SIGKILL of the server, and every write it had not fsynced dropped"
    )

    def grid(self, scenario: Scenario) -> Grid:
        """What loses power in ``scenario``."""
        if self.target is not None:
            return SERVER
        if scenario.transport == FILES:
            return FOLDER
        return CLUSTER if scenario.cluster else SERVER

    def refusal(self, scenario: Scenario) -> str | None:
        grid = self.grid(scenario)
        if grid is FOLDER:
            return (
                None
                if scenario.pattern == "direct"
                else (f"{self.name} on files applies to --pattern direct")
            )
        if grid is CLUSTER:  # the nodes --cut names, not a single broker
            return Fault.refusal(self, scenario)
        return super().refusal(scenario)

    def storage(self, scenario: Scenario) -> str | None:
        return BROKER

    def replaced(self, scenario: Scenario) -> list[tuple[str, str]]:
        return self.grid(scenario).replaced(scenario)

    def prepare(self, infra: Backend, scenario: Scenario, url: str) -> bool:
        return self.grid(scenario).prepare(self, infra, scenario, url)

    def finish(self, infra: Backend, scenario: Scenario, url: str) -> None:
        self.grid(scenario).finish(self, infra, scenario, url)

    def inject(self, ctx: Context) -> None:
        self.grid(ctx.scenario).cut(self, ctx)

    def heal(self, ctx: Context) -> None:
        self.grid(ctx.scenario).back(self, ctx)

    def record(self, ctx: Context, target: str, cut: CutReport, **more: Any) -> None:
        """The cut in the evidence: who was killed, and the bytes dropped per file (the
        ``TOP_FILES`` that lost the most)."""
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


SERVER, FOLDER, CLUSTER = ServerGrid(), FolderGrid(), ClusterGrid()


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

    def storage(self, scenario: Scenario) -> str | None:
        """What PostgreSQL kept of what it committed: the run's ``lab_orders`` rows (a message
        is sent once its business transaction committed: dual-write, outbox, cdc)."""
        return DATABASE if scenario.commits_first else None


FAULTS: tuple[ServerKill, ...] = (PowerCut(), DbPowerCut())
