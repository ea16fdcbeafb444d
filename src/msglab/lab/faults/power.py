"""Power cuts: the server is SIGKILLed and every write it had not fsynced is dropped, as when
the power goes (its data folder on msglab's lazy filesystem, ``msglab.infra.lazyfs``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from msglab.infra import Backend
from msglab.lab.faults.base import Context
from msglab.lab.faults.server import ServerKill

if TYPE_CHECKING:
    from msglab.lab.scenario import Scenario

TOP_FILES = 20  # files named in the cut's record, the ones that lost the most


class PowerCut(ServerKill):
    """The run puts the server on the lazy filesystem first if it is not (and moves it back to
    the plain disk after); the cut at the kill point records the bytes dropped per file;
    the server comes back after ``down_s`` on the same filesystem (``ServerKill.heal``: its
    ``up`` mounts it again)."""

    name: ClassVar[str] = "power-cut"
    does: ClassVar[str] = (
        "SIGKILL the broker after `kill_after` sends and drop every write it had not fsynced "
        "(its data on msglab's lazy filesystem), restart after `down_s`"
    )
    simulated: ClassVar[str | None] = (
        "power cut: SIGKILL of the server, and every write it had not fsynced dropped"
    )

    def prepare(self, infra: Backend, scenario: Scenario) -> bool:
        service = self.server(scenario)
        (status,) = infra.status([service])
        if status.lazyfs:
            return False
        infra.down([service])
        infra.up([service], lazyfs=True)
        return True

    def finish(self, infra: Backend, scenario: Scenario) -> None:
        service = self.server(scenario)
        infra.down([service])  # a clean unmount: everything written reaches the disk
        infra.up([service])

    def inject(self, ctx: Context) -> None:
        service = self.server(ctx.scenario)
        cut = ctx.infra.power_cut(service)
        worst = sorted(cut.files, key=lambda f: -f.dropped_bytes)[:TOP_FILES]
        ctx.log.record(
            self.name,
            "kill",
            service,
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
        )


class DbPowerCut(PowerCut):
    name: ClassVar[str] = "db-power-cut"
    does: ClassVar[str] = (
        "cut PostgreSQL's power after `kill_after` sends (SIGKILL, and every write it had not "
        "fsynced dropped), restart after `down_s`"
    )
    needs_server: ClassVar[bool] = False
    target: ClassVar[str | None] = "postgres"


FAULTS: tuple[ServerKill, ...] = (PowerCut(), DbPowerCut())
