"""Faults applied to the real servers and processes of a run, each recorded with its time."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from msglab.infra import Backend
from msglab.infra.toxics import Stream, ToxiproxyClient
from msglab.lab.evidence import FAULTS, Ledger
from msglab.lab.scenario import SERVER_KILLS

STREAMS: tuple[Stream, ...] = ("upstream", "downstream")  # client -> broker, broker -> client


class FaultLog:
    """The orchestrator's fault records (``faults-orchestrator.jsonl``)."""

    def __init__(self, run_dir: Path) -> None:
        self._ledger = Ledger(run_dir, FAULTS, "orchestrator", sync=True)

    def record(self, fault: str, action: str, target: str, **detail: Any) -> None:
        self._ledger.write(
            {"ts": time.time(), "fault": fault, "action": action, "target": target, **detail}
        )

    def close(self) -> None:
        self._ledger.close()


def server_down(infra: Backend, service: str, fault: str, log: FaultLog) -> None:
    """broker-kill, db-kill and connect-kill: SIGKILL of the real server process;
    broker-restart: a graceful stop."""
    if fault in SERVER_KILLS:
        pid = infra.kill(service)
        log.record(
            fault,
            "kill",
            service,
            pid=pid,
            signal="SIGKILL",
            note="a process kill, not a power cut: the page cache survives",
        )
    else:
        infra.down([service])
        log.record(fault, "stop", service, signal="graceful")


def server_up(infra: Backend, service: str, fault: str, log: FaultLog) -> None:
    """Bring the server back; a server that does not come back raises (the run errors out)."""
    (report,) = infra.up([service])
    log.record(fault, "restart", service, seconds=round(report.seconds, 3))


def network_down(
    proxies: ToxiproxyClient, service: str, fault: str, latency_ms: float, log: FaultLog
) -> None:
    """blackhole: a ``timeout`` toxic of 0 ms both ways (bytes are dropped, connections stay
    open: what a silently dead network path does); latency: a ``latency`` toxic both ways."""
    if fault == "blackhole":
        kind, attributes = "timeout", {"timeout": 0}
    else:
        kind, attributes = "latency", {"latency": int(latency_ms), "jitter": int(latency_ms / 10)}
    network_up(proxies, service, fault, None)  # a toxic left over by an interrupted run
    for stream in STREAMS:
        proxies.add_toxic(service, _toxic(fault, stream), kind, attributes, stream)
    log.record(fault, "add-toxic", service, toxic=kind, streams=list(STREAMS), **attributes)


def network_up(proxies: ToxiproxyClient, service: str, fault: str, log: FaultLog | None) -> None:
    """Remove the fault's toxics from the service's proxy (those that exist)."""
    present = {t.name for t in proxies.proxy(service).toxics}
    for stream in STREAMS:
        if _toxic(fault, stream) in present:
            proxies.remove_toxic(service, _toxic(fault, stream))
    if log is not None:
        log.record(fault, "remove-toxic", service)


def _toxic(fault: str, stream: str) -> str:
    return f"msglab-lab-{fault}-{stream}"


def kill_process(proc: subprocess.Popen[bytes], fault: str, target: str, log: FaultLog) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    log.record(fault, "kill", target, pid=proc.pid, signal="SIGKILL")


def when(condition: Callable[[], bool], deadline_s: float, stop: Callable[[], bool]) -> bool:
    """Wait until ``condition()`` (polled every 20 ms); False on the deadline or ``stop()``."""
    end = time.monotonic() + deadline_s
    while not condition():
        if stop() or time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True
