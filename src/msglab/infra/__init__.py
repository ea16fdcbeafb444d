"""Server lifecycle: install, up, down, kill, restart, status, logs.

``backend_for(settings)`` returns the native backend (processes msglab owns) or the compose
backend (``docker compose`` where an engine answers). infra knows servers, never messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from msglab.errors import UsageError
from msglab.infra.lazyfs import CutReport
from msglab.infra.service import StartReport, Status
from msglab.settings import Settings

if TYPE_CHECKING:
    from msglab.infra.cluster import Cluster


class Backend(Protocol):
    """What ``msglab infra`` drives; every method takes service names (all when empty).
    kill, power_cut, restart, status and logs also take one node of a cluster
    (``kafka-cluster/n2``); ``kill_all`` and ``power_cut_all`` a whole cluster too (every node at
    once), where ``kill`` and ``power_cut`` hit one server."""

    name: str

    def install(self, names: list[str]) -> list[str]: ...
    def up(self, names: list[str], lazyfs: bool = False) -> list[StartReport]: ...
    def down(self, names: list[str]) -> list[str]: ...
    def kill(self, name: str) -> int: ...
    def kill_all(self, name: str) -> list[tuple[str, int]]: ...
    def power_cut(self, name: str) -> CutReport: ...
    def power_cut_all(self, name: str) -> list[CutReport]: ...
    def restart(self, name: str) -> StartReport: ...
    def status(self, names: list[str]) -> list[Status]: ...
    def logs(self, name: str, lines: int) -> str: ...
    def cluster(self, name: str) -> Cluster[Any]: ...


def backend_for(settings: Settings) -> Backend:
    if settings.backend == "native":
        from msglab.infra.native import NativeBackend

        return NativeBackend(settings)
    if settings.backend == "compose":
        from msglab.infra.compose import ComposeBackend

        return ComposeBackend(settings)
    raise UsageError(
        f"backend {settings.backend!r} is for test fixtures only; use native or compose"
    )


def service_url(settings: Settings, service: str) -> str:
    """The URL a client uses for ``service``: the external one if given, else msglab's own."""
    if service in settings.external:
        return settings.external[service]
    from msglab.infra.native import NativeBackend

    return NativeBackend(settings).url(service)


__all__ = ["Backend", "CutReport", "StartReport", "Status", "backend_for", "service_url"]
