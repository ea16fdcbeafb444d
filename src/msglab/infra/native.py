"""The native backend: real servers as processes msglab owns, plus servers given by URL."""

from __future__ import annotations

import shutil
from collections.abc import Iterable

from msglab.config import redact_url
from msglab.errors import ExternalServiceError, NotRunningError, ServerStartError, UsageError
from msglab.infra import external, netrules, process
from msglab.infra.connect import Connect
from msglab.infra.kafka import Kafka, Kafka2
from msglab.infra.lazyfs import CutReport, check_available
from msglab.infra.lazyfs.disk import folder_disk
from msglab.infra.netrules import NetRules
from msglab.infra.postgres import Postgres
from msglab.infra.rabbitmq import RabbitMQ
from msglab.infra.redis import Redis
from msglab.infra.service import NativeService, StartReport, Status, apt_install
from msglab.infra.toxiproxy import Toxiproxy
from msglab.settings import Settings, check_services

FILES_FOLDER = "files"  # the files transport's folder in MSGLAB_HOME (brokers.serverless_url)

SERVICE_TYPES: dict[str, type[NativeService]] = {
    "kafka": Kafka,
    "kafka2": Kafka2,
    "rabbitmq": RabbitMQ,
    "redis": Redis,
    "postgres": Postgres,
    "connect": Connect,
    "toxiproxy": Toxiproxy,
}


class NativeBackend:
    """Installs, starts, kills and restarts msglab's own servers; probes external ones."""

    name = "native"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def service(self, name: str) -> NativeService:
        (valid,) = check_services([name])
        return SERVICE_TYPES[valid](self.settings)

    def _owned(self, name: str, action: str) -> NativeService:
        url = self.settings.external.get(name)
        if url is not None:
            raise ExternalServiceError(
                f"{name} is external ({redact_url(url)}): msglab does not own it and will not "
                f"{action} it"
            )
        return self.service(name)

    def install(self, names: Iterable[str] = ()) -> list[str]:
        """Install what is missing; the names of the services installed now. Everything (no
        names) includes nftables, which network partitions need."""
        done, names = [], list(names)
        if not names and not netrules.available():
            netrules.install()
            done.append("nftables")
        for name in check_services(list(names)):
            if name in self.settings.external:
                continue
            svc = self.service(name)
            if not svc.is_installed():
                svc.install()
                done.append(name)
            if svc.keeps_data and shutil.which("fusermount3") is None:
                apt_install(["fuse3"])  # the lazy filesystem (up --lazyfs, power cuts)
                done.append("fuse3")
        return done

    def up(self, names: Iterable[str] = (), lazyfs: bool = False) -> list[StartReport]:
        """Start ``names`` (all when empty). ``lazyfs``: each server that keeps data runs on
        the lazy filesystem (a service named that keeps none is refused)."""
        named = list(names)
        if lazyfs:
            refused = [n for n in check_services(named) if not self.service(n).keeps_data]
            if refused:
                raise UsageError(f"--lazyfs: {', '.join(refused)} keep no data")
            check_available()
        reports = []
        for name in check_services(named):
            url = self.settings.external.get(name)
            if url is None:
                svc = self.service(name)
                reports.append(svc.up(lazyfs=lazyfs and svc.keeps_data))
            elif not external.status(name, url, self.settings.connect_timeout_s).healthy:
                raise ServerStartError(
                    f"{name} is external ({redact_url(url)}) and does not answer within "
                    f"{self.settings.connect_timeout_s:g} s"
                )
        return reports

    def down(self, names: Iterable[str] = ()) -> list[str]:
        """Stop gracefully, in reverse start order; the names that were running. Stopping
        everything also takes the files transport's folder off the lazy filesystem, where a
        power-cut run cut short may have left it."""
        stopped = []
        for name in reversed(check_services(list(names), on_demand=True)):
            if name not in self.settings.external and self.service(name).down():
                stopped.append(name)
        if not names:
            folder_disk(self.settings.home / FILES_FOLDER).leave()
            NetRules(self.settings.home).remove()  # a partition a run cut short left
        return stopped

    def kill(self, name: str) -> int:
        return self._owned(name, "kill").kill()

    def power_cut(self, name: str) -> CutReport:
        """Cut the power of one server on the lazy filesystem; it stays down."""
        return self._owned(name, "power-cut").power_cut()

    def restart(self, name: str) -> StartReport:
        return self._owned(name, "restart").restart()

    def status(self, names: Iterable[str] = ()) -> list[Status]:
        result = []
        for name in check_services(list(names)):
            url = self.settings.external.get(name)
            if url is None:
                result.append(self.service(name).status())
            else:
                result.append(external.status(name, url, self.settings.connect_timeout_s))
        return result

    def logs(self, name: str, lines: int = 40) -> str:
        svc = self._owned(name, "show the logs of")
        if not svc.log_path.exists():
            raise NotRunningError(f"{name} has no log yet ({svc.log_path}); run `msglab infra up`")
        return process.log_tail(svc.log_path, lines)
