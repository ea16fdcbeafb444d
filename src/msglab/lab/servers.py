"""Which server each client of a lab run uses, decided before anything starts.

A run uses exactly the servers the user named: msglab's own, or the one that
``MSGLAB_<SERVICE>_URL`` gives. A fault that cannot act on the named server is refused here,
with the reason, before a server is started or a run folder made:

- a kill or restart (broker-kill, broker-restart, db-kill, connect-kill) of a server msglab
  does not own: it has no process of it to signal;
- a network fault (blackhole, latency) on an external Kafka: Kafka clients reconnect to the
  addresses the cluster advertises, so they would leave the proxy after the first request.

A network fault on an external RabbitMQ or Redis goes through msglab's Toxiproxy, whose proxy
then forwards to the external address (``toxiproxy.point_proxies``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from msglab.brokers import serverless_url
from msglab.config import redact_url
from msglab.errors import UsageError
from msglab.infra import external, service_url, toxiproxy
from msglab.infra.connect import Connect
from msglab.lab.faults import FAULTS
from msglab.lab.scenario import Scenario
from msglab.settings import Settings


@dataclass(frozen=True)
class Endpoint:
    """A server the run's clients use.

    role: ``broker``, ``database`` or ``connect``. url: what the clients connect with, the
    password included (``to_json`` hides it). address: the server's own host:port.
    owner: ``msglab`` or ``external``. via: ``toxiproxy`` when the clients go through its proxy.
    """

    role: str
    service: str
    url: str
    address: str
    owner: str
    via: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {
            "role": self.role,
            "service": self.service,
            "owner": self.owner,
            "address": self.address,
            "url": redact_url(self.url),
            "via": self.via,
        }


@dataclass(frozen=True)
class Servers:
    """The run's servers: the broker (None for the files transport), PostgreSQL (effects,
    business rows, the outbox) and Kafka Connect (cdc only)."""

    broker: Endpoint | None
    database: Endpoint
    connect: Endpoint | None
    broker_url: str  # what the run's clients connect with: the broker's, or the folder's
    connect_secrets: Path | None = None  # msglab's own worker reads passwords from files here

    @property
    def services(self) -> list[str]:
        """What must be up for the run, Toxiproxy included when the clients go through it."""
        names = [e.service for e in (self.broker, self.database, self.connect) if e]
        return names + (["toxiproxy"] if self.broker and self.broker.via else [])

    def to_json(self) -> list[dict[str, str | None]]:
        return [e.to_json() for e in (self.broker, self.database, self.connect) if e]


def _endpoint(settings: Settings, role: str, service: str) -> Endpoint:
    url = service_url(settings, service)
    host, port = external.host_port(service, url)
    owner = "external" if service in settings.external else "msglab"
    return Endpoint(role, service, url, f"{host}:{port}", owner)


def _refuse(scenario: Scenario, service: str, settings: Settings, why: str) -> UsageError:
    shown, variable = redact_url(settings.external[service]), f"MSGLAB_{service.upper()}_URL"
    usable = [f.name for f in FAULTS.values() if not (f.signals_server or f.through_proxy)]
    return UsageError(
        f"--fault {scenario.fault} cannot act on {service} at {shown} ({variable}): {why}. "
        f"Unset {variable} to run it on msglab's own {service}, or choose a fault that "
        f"acts on no server: {', '.join(usable)}"
    )


def plan(scenario: Scenario, settings: Settings) -> Servers:
    """The servers ``scenario`` uses under ``settings``; UsageError when its fault cannot act
    on them (see the module's docstring). Starts nothing and touches no server."""
    fault_service = scenario.fault_service
    signals = scenario.fault_kind.signals_server
    if signals and fault_service and fault_service in settings.external:
        raise _refuse(
            scenario, fault_service, settings, "msglab does not own it and has no process to signal"
        )
    if scenario.through_proxy and scenario.service == "kafka" and "kafka" in settings.external:
        raise _refuse(
            scenario,
            "kafka",
            settings,
            "the fault is made in Toxiproxy, and Kafka clients reconnect to the addresses an "
            "external cluster advertises, bypassing the proxy",
        )
    broker = None
    if scenario.service is not None:
        broker = _endpoint(settings, "broker", scenario.service)
        url = broker.url
        if scenario.through_proxy:
            url = toxiproxy.proxied_url(settings, scenario.service)
            broker = replace(broker, via="toxiproxy")
    else:
        url = serverless_url(scenario.transport, settings.home)
    connect = _endpoint(settings, "connect", "connect") if scenario.uses_connect else None
    secrets = None
    if connect and connect.owner == "msglab" and settings.backend == "native":
        secrets = Connect(settings).secrets_dir
    return Servers(broker, _endpoint(settings, "database", "postgres"), connect, url, secrets)
