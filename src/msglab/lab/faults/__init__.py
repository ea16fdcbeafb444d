"""The faults of ``msglab run --fault``: one object each (``base.Fault``), one registry.

Adding a fault is one class in a module of this package, listed in its module's ``FAULTS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from msglab.errors import UsageError
from msglab.lab.faults import cluster, corrupt, network, power, process, server
from msglab.lab.faults.base import Context, Fault, FaultLog

FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault(),
        *server.FAULTS,
        *power.FAULTS,
        *process.FAULTS,
        *network.FAULTS,
        *cluster.FAULTS,
        *corrupt.FAULTS,
    )
}
"""Every fault by name, in the order ``--help`` lists them."""


def fault(name: str) -> Fault:
    """The fault ``name``; UsageError listing the valid names."""
    if name not in FAULTS:
        raise UsageError(f"unknown fault {name!r}; valid: {', '.join(FAULTS)}")
    return FAULTS[name]


def when(condition: Callable[[], bool], deadline_s: float, stop: Callable[[], bool]) -> bool:
    """Wait until ``condition()`` (polled every 20 ms); False on the deadline or ``stop()``."""
    end = time.monotonic() + deadline_s
    while not condition():
        if stop() or time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


__all__ = ["FAULTS", "Context", "Fault", "FaultLog", "fault", "when"]
