"""Faults of msglab's own processes: a consumer, a producer or the outbox relay dies."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING, ClassVar

from msglab.lab.faults.base import Context, Fault

if TYPE_CHECKING:
    from msglab.lab.scenario import Scenario


class ConsumerKill(Fault):
    """Consumer ``c0`` SIGKILLs itself right after its ``kill_after``-th effect, before the
    ack; a fresh consumer takes its place."""

    name: ClassVar[str] = "consumer-kill"
    does: ClassVar[str] = (
        "a consumer SIGKILLs itself after its `kill_after`-th effect, before the ack"
    )

    def worker_asks(self, scenario: Scenario, role: str, name: str) -> dict[str, int]:
        return {"die_after_effects": scenario.fault_at} if name == "c0" else {}

    def replaced(self, scenario: Scenario) -> list[tuple[str, str]]:
        return [("c0", "consumer")]


STOP_WAIT_S = 20.0  # a consumer's grace (10 s) and its exit


class ConsumerStop(Fault):
    """Every consumer gets SIGTERM, the App runtime's graceful stop: it fetches nothing more,
    lets the batch in hand finish and acks it, then exits. The orchestrator waits for them to
    exit (recording each exit code); fresh consumers start ``down_s`` later. What a deploy does
    to a consumer group: nothing lost, nothing delivered twice."""

    name: ClassVar[str] = "consumer-stop"
    does: ClassVar[str] = (
        "SIGTERM every consumer after `kill_after` sends (a graceful stop); fresh ones start "
        "`down_s` later"
    )

    def fired_by_orchestrator(self, scenario: Scenario) -> bool:
        return True

    def replaced(self, scenario: Scenario) -> list[tuple[str, str]]:
        return [(f"c{i}", "consumer") for i in range(scenario.consumers)]

    def inject(self, ctx: Context) -> None:
        names = [n for n, _role in self.replaced(ctx.scenario) if n in ctx.workers]
        for name in names:
            proc = ctx.workers[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                ctx.log.record(self.name, "stop", name, pid=proc.pid, signal="SIGTERM")
        deadline = time.monotonic() + STOP_WAIT_S
        for name in names:
            proc = ctx.workers[name]
            try:
                code = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()  # past its grace: what it holds comes again
                code = proc.wait()
            ctx.log.record(self.name, "exited", name, pid=proc.pid, exit_code=code)

    def heal(self, ctx: Context) -> None:
        for name, _role in self.replaced(ctx.scenario):
            ctx.log.record(self.name, "start", name, note=f"{name}-r replaces it")


class ProducerKill(Fault):
    """``direct``: the orchestrator SIGKILLs producer ``p0`` with sends in flight. A producer
    that commits first (dual-write, outbox, cdc) kills itself between its commit and its
    publish, where a dual write loses the message; a publish-then-commit producer between its
    publish and its commit, where the message goes out without its business row."""

    name: ClassVar[str] = "producer-kill"
    does: ClassVar[str] = "SIGKILL a producer after `kill_after` sends, with sends in flight"

    def fired_by_orchestrator(self, scenario: Scenario) -> bool:
        return not scenario.commits_first

    def worker_asks(self, scenario: Scenario, role: str, name: str) -> dict[str, int]:
        if name == "p0" and scenario.commits_first:
            return {"die_after_commits": scenario.fault_at}
        return {}

    def inject(self, ctx: Context) -> None:
        name = ctx.producers[0]
        pid = ctx.workers[name].pid
        os.kill(pid, signal.SIGKILL)
        ctx.log.record(self.name, "kill", name, pid=pid, signal="SIGKILL")

    def hold(self, ctx: Context) -> None:
        """A kill with nothing to heal and no wait: the producer's unsent share is never
        sent."""
        self.inject(ctx)


class RelayKill(Fault):
    name: ClassVar[str] = "relay-kill"
    does: ClassVar[str] = (
        "the outbox relay SIGKILLs itself midway through the pass that reaches "
        "`kill_after` messages (after the publish, before the mark; under at-most-once after the "
        "mark, before the publish); a fresh relay takes over (with --relays N, the first of "
        "them: the others take its keys over at once)"
    )
    patterns: ClassVar[tuple[str, ...] | None] = ("outbox",)

    def worker_asks(self, scenario: Scenario, role: str, name: str) -> dict[str, int]:
        # with several relays, the first relays about its share of the keys
        share = max(1, scenario.fault_at // scenario.relays)
        return {"die_after_relayed": share} if name == "relay" else {}

    def replaced(self, scenario: Scenario) -> list[tuple[str, str]]:
        return [("relay", "relay")]


FAULTS: tuple[Fault, ...] = (ConsumerKill(), ConsumerStop(), ProducerKill(), RelayKill())
