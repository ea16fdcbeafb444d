"""Probes: measured experiments for the claims of docs/guarantees.md that are not about delivering
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


OWN_SERVERS: dict[str, tuple[str, ...]] = {"scaling": ("kafka",)}
"""Servers a probe must own: the scaling probe starts a second broker that joins msglab's
Kafka and sets client quotas on it."""


def check_servers(name: str, settings: Settings) -> None:
    """UsageError, before anything starts, when probe ``name`` needs to own a server that
    ``settings`` name as external."""
    for service in OWN_SERVERS.get(name, ()):
        if service in settings.external:
            raise UsageError(
                f"probe {name} needs msglab's own {service}, and MSGLAB_{service.upper()}_URL "
                f"names an external one; unset it to run this probe"
            )


def run_probe(name: str, variant: str, settings: Settings, quick: bool = True) -> dict[str, Any]:
    """Run one probe variant; its report (``probe``, ``variant``, ``figures``, ``measured``,
    ``seconds``)."""
    if name not in PROBES:
        raise UsageError(f"unknown probe {name!r}; valid: {', '.join(PROBES)}")
    if variant not in PROBES[name]:
        raise UsageError(f"unknown variant {variant!r} of {name}; valid: {', '.join(PROBES[name])}")
    check_servers(name, settings)
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
