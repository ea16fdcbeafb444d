"""msglab's pip extras: the drivers each one installs, and how code says it needs one.

``pip install msglab`` brings the core, the CLI, ``infra`` and the memory and files
transports. Every driver comes with an extra (``pip install 'msglab[kafka]'``). A module that
needs a driver imports it, at its one place, inside ``with driver_import("kafka", __name__):``,
so that importing the module without the driver raises MissingExtraError naming the extra; a
command that needs several calls ``require()`` before it starts, and so names all of them at
once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec

from msglab.errors import MissingExtraError

EXTRAS: dict[str, tuple[str, ...]] = {
    "kafka": ("confluent_kafka",),
    "rabbitmq": ("pika",),
    "redis": ("redis",),
    "postgres": ("sqlalchemy", "psycopg"),
    "sqlite": ("sqlalchemy",),  # the outbox, relay and idempotent consumer on SQLite
    "cdc": ("httpx",),
    "lazyfs": ("mfusepy",),
    "metrics": ("prometheus_client",),
    "testcontainers": ("testcontainers",),
}
"""Each extra of pyproject.toml and the top-level modules of the drivers it installs."""

ALL = ("kafka", "rabbitmq", "redis", "postgres", "sqlite", "cdc", "lazyfs", "metrics")
"""The extras of ``msglab[all]``: every server msglab runs, the lazy filesystem and the
Prometheus exporter."""


def missing(*extras: str) -> list[str]:
    """Those of ``extras`` with a driver that is not installed (found without importing it)."""
    return [e for e in dict.fromkeys(extras) if any(find_spec(m) is None for m in EXTRAS[e])]


def require(*extras: str, what: str) -> None:
    """MissingExtraError naming every extra of ``extras`` that is not installed, as needed by
    ``what`` (``"msglab run -t kafka"``); nothing when all are there."""
    absent = missing(*extras)
    if absent:
        drivers = [m for e in absent for m in EXTRAS[e] if find_spec(m) is None]
        raise MissingExtraError(what, absent, drivers)


@contextmanager
def driver_import(extra: str, module: str) -> Iterator[None]:
    """Around a module's driver imports: a driver that is not installed becomes
    MissingExtraError (``module`` needs it: ``pip install 'msglab[extra]'``)."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise MissingExtraError(module, [extra], [exc.name or EXTRAS[extra][0]]) from exc
