"""Faults of a server msglab runs: SIGKILL of its real process (the broker, PostgreSQL, Kafka
Connect) or a graceful stop of the broker, restarted after ``down_s``."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from msglab.lab.faults.base import BROKER, Context, Fault

if TYPE_CHECKING:
    from msglab.lab.scenario import Scenario

PROCESS_KILL = (
    "process kill: SIGKILL of the server process; the OS page cache survives, so "
    "this is not a power cut"
)


class ServerKill(Fault):
    """SIGKILL of the real server process (JVM, beam.smp, redis-server, postmaster), restarted
    with its data after ``down_s``. ``target``: the service killed (None: the broker)."""

    name: ClassVar[str] = "broker-kill"
    does: ClassVar[str] = (
        "SIGKILL the broker process after `kill_after` sends, restart after `down_s`"
    )
    needs_server: ClassVar[bool] = True
    simulated: ClassVar[str | None] = PROCESS_KILL
    signals_server: ClassVar[bool] = True
    target: ClassVar[str | None] = None

    def refusal(self, scenario: Scenario) -> str | None:
        if scenario.cluster and self.target is None:
            return f"{self.name} acts on a single broker (on a cluster: leader-kill)"
        return super().refusal(scenario)

    def service(self, scenario: Scenario) -> str | None:
        return self.target or scenario.service

    def server(self, scenario: Scenario) -> str:
        """``service``, which a scenario this fault applies to always has (``refusal`` keeps
        broker faults to transports with a broker)."""
        service = self.service(scenario)
        assert service is not None
        return service

    def fired_by_orchestrator(self, scenario: Scenario) -> bool:
        return True

    def storage(self, scenario: Scenario) -> str | None:
        """The broker's kills, restarts and power cuts (not PostgreSQL's or Connect's)."""
        return BROKER if self.target is None else None

    def inject(self, ctx: Context) -> None:
        service = self.server(ctx.scenario)
        pid = ctx.infra.kill(service)
        ctx.log.record(
            self.name,
            "kill",
            service,
            pid=pid,
            signal="SIGKILL",
            note="a process kill, not a power cut: the page cache survives",
        )

    def heal(self, ctx: Context) -> None:
        """Bring the server back; one that does not come back raises (the run errors out)."""
        service = self.server(ctx.scenario)
        (report,) = ctx.infra.up([service])
        ctx.after_restart(service)
        ctx.log.record(self.name, "restart", service, seconds=round(report.seconds, 3))


class BrokerRestart(ServerKill):
    name: ClassVar[str] = "broker-restart"
    does: ClassVar[str] = (
        "stop the broker gracefully after `kill_after` sends, start after `down_s`"
    )
    simulated: ClassVar[str | None] = None

    def inject(self, ctx: Context) -> None:
        service = self.server(ctx.scenario)
        ctx.infra.down([service])
        ctx.log.record(self.name, "stop", service, signal="graceful")


class DbKill(ServerKill):
    name: ClassVar[str] = "db-kill"
    does: ClassVar[str] = (
        "SIGKILL PostgreSQL after `kill_after` sends (during the business and outbox "
        "writes and the consumers' effects), restart after `down_s`"
    )
    needs_server: ClassVar[bool] = False
    target: ClassVar[str | None] = "postgres"


class ConnectKill(ServerKill):
    name: ClassVar[str] = "connect-kill"
    does: ClassVar[str] = (
        "SIGKILL the Kafka Connect worker running the run's Debezium connector "
        "after `kill_after` sends, restart after `down_s` (patterns cdc, table-cdc)"
    )
    needs_server: ClassVar[bool] = False
    patterns: ClassVar[tuple[str, ...] | None] = ("cdc", "table-cdc")
    target: ClassVar[str | None] = "connect"


FAULTS: tuple[Fault, ...] = (ServerKill(), BrokerRestart(), DbKill(), ConnectKill())
