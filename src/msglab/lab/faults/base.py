"""What a fault is: one object that knows its name, what it does, where it applies, what it
asks of the workers, how it is injected and healed (each step recorded in the evidence), and
how the report draws it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from msglab.infra import Backend
from msglab.lab.evidence import FAULTS, Ledger

if TYPE_CHECKING:
    from msglab.infra.toxics import ToxiproxyClient
    from msglab.lab.scenario import Scenario


BROKER = "broker"
DATABASE = "database"


class FaultLog:
    """The orchestrator's fault records (``faults-orchestrator.jsonl``), fsynced per line."""

    def __init__(self, run_dir: Path) -> None:
        self._ledger = Ledger(run_dir, FAULTS, "orchestrator", sync=True)

    def record(self, fault: str, action: str, target: str, **detail: Any) -> None:
        self._ledger.write(
            {"ts": time.time(), "fault": fault, "action": action, "target": target, **detail}
        )

    def close(self) -> None:
        self._ledger.close()


@dataclass
class Context:
    """What a fault acts on during a run: the servers (``infra``), the broker's URL (``url``; the
    files transport's folder), Toxiproxy (``proxies``, for network faults), the run's worker
    processes by name, and where its records go.
    ``after_restart(service)``: a fault that restarted a server calls it (a server that forgets
    run-time settings gets the run's ``--set`` again)."""

    scenario: Scenario
    infra: Backend
    log: FaultLog
    url: str = ""
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    producers: list[str] = field(default_factory=list)
    proxies: ToxiproxyClient | None = None
    after_restart: Callable[[str], None] = lambda service: None  # the run's settings again
    memo: dict[str, Any] = field(default_factory=dict)  # what a fault's inject tells its heal


class Fault:
    """A fault of ``msglab run --fault NAME``. The base class is the fault that does nothing.

        Class attributes declare it: ``name``; ``does`` (one line for ``--help`` and the docs);
    ``needs_server``: it acts on the transport's broker, which the files transport lacks;
    ``patterns``: the patterns it applies to (None: all); ``simulated``: what the report says
    the fault stands for (None: nothing to say); ``through_proxy``: every client of the run
    reaches the broker through Toxiproxy; ``signals_server``: it signals a server's process, so
    msglab must own that server. How the report draws it comes from its records: an action
    that stops something opens a window, the one that brings it back closes it, a kill with no
    return is a moment (``lab.timeline``).

    A fault the orchestrator fires (``fired_by_orchestrator``) is injected once ``kill_after``
    sends were made, held for ``down_s`` and healed; a fault a worker inflicts on itself is
    asked of that worker through its spec (``worker_asks``); the run replaces the workers a
    fault killed (``replaced``).
    """

    name: ClassVar[str] = "none"
    does: ClassVar[str] = "no fault"
    needs_server: ClassVar[bool] = False
    patterns: ClassVar[tuple[str, ...] | None] = None
    simulated: ClassVar[str | None] = None
    through_proxy: ClassVar[bool] = False
    signals_server: ClassVar[bool] = False

    def refusal(self, scenario: Scenario) -> str | None:
        """Why this fault cannot apply to ``scenario`` (its transport or pattern), or None."""
        if self.needs_server and scenario.service is None:
            return f"{scenario.transport} has no server for {self.name}"
        if scenario.cluster and self.through_proxy:
            return f"{self.name} goes through Toxiproxy, which has no proxy for a cluster"
        if self.patterns is not None and scenario.pattern not in self.patterns:
            return (
                f"{self.name} applies to --pattern {' or '.join(self.patterns)}, "
                f"not {scenario.pattern}"
            )
        return None

    def service(self, scenario: Scenario) -> str | None:
        """The server this fault acts on (None: none)."""
        return None

    def storage(self, scenario: Scenario) -> str | None:
        """Where a durability fault's victim kept the confirmed messages, which the lab reads
        after the run (``lost_from_storage``): ``BROKER`` (a group that subscribed before the
        first send and read nothing until the end), ``DATABASE`` (the run's ``lab_orders``
        rows, committed with each message) or None (not a durability fault)."""
        return None

    def fired_by_orchestrator(self, scenario: Scenario) -> bool:
        """True when the orchestrator injects it after ``kill_after`` sends."""
        return False

    def worker_asks(self, scenario: Scenario, role: str, name: str) -> dict[str, int]:
        """What the worker ``name`` (of ``role``: producer, consumer, relay) is asked to do to
        itself, as WorkerSpec fields (``die_after_*``)."""
        return {}

    def replaced(self, scenario: Scenario) -> list[tuple[str, str]]:
        """(worker name, role) of each worker this fault kills that the run replaces by a fresh
        one (``<name>-r``) once it is dead."""
        return []

    def prepare(self, infra: Backend, scenario: Scenario, url: str) -> bool:
        """Set the servers (or the files transport's folder, ``url``) up for this fault before
        the run starts (its servers are up); True when it changed something that ``finish``
        puts back after the run."""
        return False

    def finish(self, infra: Backend, scenario: Scenario, url: str) -> None:
        """Undo what ``prepare`` changed (called after the run, when it returned True)."""

    def inject(self, ctx: Context) -> None:
        """Break something, recording what and when in ``ctx.log``."""

    def heal(self, ctx: Context) -> None:
        """Undo ``inject`` after ``down_s`` (also after Ctrl-C), recording it."""

    def hold(self, ctx: Context) -> None:
        """Inject, wait ``down_s``, heal: the orchestrator's fault, start to end."""
        self.inject(ctx)
        try:
            time.sleep(ctx.scenario.down_s)
        finally:
            self.heal(ctx)
