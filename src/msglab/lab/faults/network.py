"""Network faults made by Toxiproxy between every client of the run and the broker."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from msglab.infra.toxics import Stream, ToxiproxyClient
from msglab.lab.faults.base import Context, Fault

if TYPE_CHECKING:
    from msglab.lab.scenario import Scenario

STREAMS: tuple[Stream, ...] = ("upstream", "downstream")  # client -> broker, broker -> client


class NetworkFault(Fault):
    """A toxic on both directions of the broker's proxy for ``down_s``; ``toxic`` gives its
    Toxiproxy type and attributes for a scenario."""

    needs_server: ClassVar[bool] = True
    through_proxy: ClassVar[bool] = True

    def toxic(self, scenario: Scenario) -> tuple[str, dict[str, int]]:
        raise NotImplementedError

    def service(self, scenario: Scenario) -> str | None:
        return scenario.service

    def fired_by_orchestrator(self, scenario: Scenario) -> bool:
        return True

    def inject(self, ctx: Context) -> None:
        proxies, service = self._proxy(ctx)
        kind, attributes = self.toxic(ctx.scenario)
        self._remove(proxies, service)  # a toxic left over by an interrupted run
        for stream in STREAMS:
            proxies.add_toxic(service, self._toxic_name(stream), kind, attributes, stream)
        ctx.log.record(
            self.name, "add-toxic", service, toxic=kind, streams=list(STREAMS), **attributes
        )

    def heal(self, ctx: Context) -> None:
        proxies, service = self._proxy(ctx)
        self._remove(proxies, service)
        ctx.log.record(self.name, "remove-toxic", service)

    def _proxy(self, ctx: Context) -> tuple[ToxiproxyClient, str]:
        service = self.service(ctx.scenario)
        assert ctx.proxies is not None and service is not None  # a run through the proxy
        return ctx.proxies, service

    def _remove(self, proxies: ToxiproxyClient, service: str) -> None:
        """Remove this fault's toxics from the service's proxy (those that exist)."""
        present = {t.name for t in proxies.proxy(service).toxics}
        for stream in STREAMS:
            if self._toxic_name(stream) in present:
                proxies.remove_toxic(service, self._toxic_name(stream))

    def _toxic_name(self, stream: str) -> str:
        return f"msglab-lab-{self.name}-{stream}"


class Blackhole(NetworkFault):
    """A ``timeout`` toxic of 0 ms both ways: bytes are dropped, connections stay open, as a
    silently dead network path does."""

    name: ClassVar[str] = "blackhole"
    does: ClassVar[str] = (
        "after `kill_after` sends, Toxiproxy drops every byte between the clients and "
        "the broker for `down_s` (connections stay open, nothing gets through)"
    )

    def toxic(self, scenario: Scenario) -> tuple[str, dict[str, int]]:
        return "timeout", {"timeout": 0}


class Latency(NetworkFault):
    name: ClassVar[str] = "latency"
    does: ClassVar[str] = (
        "after `kill_after` sends, Toxiproxy delays every byte by `latency_ms` each way "
        "for `down_s`"
    )

    def toxic(self, scenario: Scenario) -> tuple[str, dict[str, int]]:
        delay = int(scenario.latency_ms)
        return "latency", {"latency": delay, "jitter": int(scenario.latency_ms / 10)}


FAULTS: tuple[Fault, ...] = (Blackhole(), Latency())
