"""Probes: measured experiments for the claims of GUARANTEES.md that are not about delivering
messages (concurrency control, external-call hygiene, two-phase commit, scaling by brokers).
Each runs on the real servers and returns a report: ``figures`` (what was measured, raw enough
to recompute the ``measured`` line) and ``measured`` (one line for the table).

``run_probe(name, variant, settings, quick)``; ``PROBES`` lists each probe's variants.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from msglab.errors import UsageError
from msglab.extras import require
from msglab.settings import Settings

PROBES: dict[str, tuple[str, ...]] = {
    "concurrency": (
        "read-modify-write",
        "atomic-increment",
        "select-for-update",
        "optimistic-version",
        "redis-lock",
        "lock-order-opposite",
        "lock-order-fixed",
    ),
    "hygiene": ("connect-timeout", "circuit-breaker", "bulkhead", "lost-reply"),
    "two-phase-commit": ("compare",),
    "scaling": ("kafka-brokers",),
}

EXTRAS: dict[str, tuple[str, ...]] = {
    "concurrency": ("postgres", "redis"),
    "hygiene": ("kafka", "rabbitmq", "redis"),
    "two-phase-commit": ("postgres",),
    "scaling": ("kafka",),
}
"""The pip extras each probe's drivers come with."""


def run_probe(name: str, variant: str, settings: Settings, quick: bool = True) -> dict[str, Any]:
    """Run one probe variant; its report (``probe``, ``variant``, ``figures``, ``measured``,
    ``seconds``)."""
    if name not in PROBES:
        raise UsageError(f"unknown probe {name!r}; valid: {', '.join(PROBES)}")
    if variant not in PROBES[name]:
        raise UsageError(f"unknown variant {variant!r} of {name}; valid: {', '.join(PROBES[name])}")
    require(*EXTRAS[name], what=f"probe {name}")
    module = importlib.import_module(f"msglab.lab.probes.{name.replace('-', '_')}")
    began = time.monotonic()
    figures, measured = module.run(variant, settings, quick)
    return {
        "probe": name,
        "variant": variant,
        "figures": figures,
        "measured": measured,
        "seconds": round(time.monotonic() - began, 2),
    }
