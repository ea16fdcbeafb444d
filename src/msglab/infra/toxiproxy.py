"""Toxiproxy (network faults) as msglab's own server: one TCP proxy in front of each broker.

The binary is built with ``go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0``
into ``<cache>/toxiproxy-2.12.0/`` (shared by every MSGLAB_HOME) and renamed
``toxiproxy-server``. It runs with ``-config <root>/proxies.json``, written by ``prepare``, so
the proxies ``kafka``, ``rabbitmq`` and ``redis`` exist as soon as the API answers, after every
start, also after a kill and restart. Toxiproxy keeps no state: a restart forgets every toxic.

A client reaches a broker *through* its proxy with ``proxied_url(settings, broker)``. Kafka
clients reconnect to the address the broker advertises, so the broker has a second listener
(``kafka_proxied``, the proxy's upstream) that advertises the proxy's address (``kafka_proxy``):
a client that bootstraps through the proxy keeps talking through it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from msglab.errors import InfraError, InstallError, UsageError
from msglab.infra import external, probes
from msglab.infra.service import HOST, Launch, NativeService, Status
from msglab.infra.toxics import ProxySpec, ToxiproxyClient
from msglab.settings import Settings

TOXIPROXY_VERSION = "2.12.0"
MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"

PROXIED = ("kafka", "rabbitmq", "redis")
"""The services that have a proxy, named as the service."""

_UPSTREAM_PORT = {"kafka": "kafka_proxied", "rabbitmq": "rabbitmq", "redis": "redis"}


def upstream(settings: Settings, service: str, own_host: str = HOST) -> str:
    """Where the proxy of ``service`` forwards to: the external server's host:port when
    ``MSGLAB_<SERVICE>_URL`` names one, else msglab's own (Kafka: its ``kafka_proxied``
    listener) on ``own_host``."""
    url = settings.external.get(service)
    if url is not None:
        host, port = external.host_port(service, url)
        return f"{host}:{port}"
    return f"{own_host}:{settings.ports[_UPSTREAM_PORT[service]]}"


def proxy_specs(
    settings: Settings, listen_host: str = HOST, upstream_hosts: Mapping[str, str] | None = None
) -> list[ProxySpec]:
    """One proxy per broker: listen on ``<broker>_proxy``, forward to ``upstream``: the
    server the clients would use without the proxy. ``upstream_hosts`` maps a broker msglab
    runs to the host its proxy forwards to (default 127.0.0.1; the compose backend gives
    container names)."""
    hosts = upstream_hosts or {}
    p = settings.ports
    return [
        ProxySpec(
            name,
            f"{listen_host}:{p[f'{name}_proxy']}",
            upstream(settings, name, hosts.get(name, HOST)),
        )
        for name in PROXIED
    ]


def proxied_url(settings: Settings, service: str) -> str:
    """What a client of ``service`` connects with to go through its Toxiproxy proxy: the
    service's URL (msglab's own or the external one, with its user, password, vhost or
    database) with host:port replaced by ``<service>_proxy`` on Toxiproxy's host (127.0.0.1,
    or the host of MSGLAB_TOXIPROXY_URL). Kafka: a ``bootstrap.servers`` value, which works
    for msglab's own broker only (it advertises the proxy's address on that listener; an
    external cluster advertises its own addresses, and its clients would bypass the proxy).
    Raises UsageError for a service without a proxy.
    """
    if service not in PROXIED:
        raise UsageError(f"no Toxiproxy proxy for {service!r}; valid: {', '.join(PROXIED)}")
    url = settings.external.get("toxiproxy")
    host = external.host_port("toxiproxy", url)[0] if url else HOST
    address = f"{host}:{settings.ports[f'{service}_proxy']}"
    if service == "kafka":
        return address
    from msglab.infra import service_url  # the package imports this module

    parts = urlsplit(service_url(settings, service))
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{address}" if credentials else address
    return urlunsplit(parts._replace(netloc=netloc))


def point_proxies(settings: Settings) -> None:
    """Make the running Toxiproxy's proxies forward to the servers ``settings`` name now (a
    Toxiproxy started before MSGLAB_<SERVICE>_URL was set still forwards to msglab's own)."""
    client(settings).populate(proxy_specs(settings))


def client(settings: Settings) -> ToxiproxyClient:
    """A client of the Toxiproxy msglab uses (its own, or MSGLAB_TOXIPROXY_URL)."""
    url = settings.external.get("toxiproxy") or f"http://{HOST}:{settings.ports['toxiproxy']}"
    return ToxiproxyClient(url, timeout_s=settings.connect_timeout_s)


class Toxiproxy(NativeService):
    name = "toxiproxy"
    keeps_data = False

    @property
    def owned_ports(self) -> Mapping[str, int]:
        p = self.settings.ports
        return {"toxiproxy": self.port, **{f"{n}_proxy": p[f"{n}_proxy"] for n in PROXIED}}

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def binary(self) -> Path:
        return self.settings.cache / f"toxiproxy-{TOXIPROXY_VERSION}" / "toxiproxy-server"

    @property
    def config_path(self) -> Path:
        return self.root / "proxies.json"

    def is_installed(self) -> bool:
        return self.binary.exists()

    def install(self) -> None:
        """``go install`` the pinned server; GOPATH and GOMODCACHE stay as the user has them."""
        go = shutil.which("go")
        if go is None:
            raise InstallError(
                "toxiproxy is built from source with `go install` and `go` is not on PATH: "
                "install Go (1.22 or newer) first"
            )
        target = self.binary.parent
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target) as gobin:
            argv = [go, "install", f"{MODULE}@v{TOXIPROXY_VERSION}"]
            env = {**os.environ, "GOBIN": gobin}
            result = subprocess.run(
                argv, capture_output=True, text=True, env=env, cwd=gobin, check=False
            )
            built = Path(gobin) / "server"
            if result.returncode != 0 or not built.exists():
                tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
                raise InstallError(
                    f"`go install {MODULE}@v{TOXIPROXY_VERSION}` failed "
                    f"(exit {result.returncode}):\n{tail}"
                )
            built.rename(self.binary)

    def prepare(self) -> bool:
        fresh = not self.config_path.exists()  # Toxiproxy keeps no data: only this file
        self.root.mkdir(parents=True, exist_ok=True)
        specs = [s.to_json() for s in proxy_specs(self.settings)]
        self.config_path.write_text(json.dumps(specs, indent=2) + "\n")
        return fresh

    def launch(self) -> Launch:
        return Launch(
            [
                str(self.binary),
                "-host",
                HOST,
                "-port",
                str(self.port),
                "-config",
                str(self.config_path),
            ],
            env={**os.environ, "LOG_LEVEL": "info"},  # the default logs every API request
        )

    def after_ready(self, cold: bool) -> None:
        """The proxies come from the config file; a proxy that could not listen is only logged."""
        try:
            have = client(self.settings).proxies()
        except InfraError as exc:
            have, why = {}, str(exc)
        else:
            why = "the config file was not applied"
        missing = [name for name in PROXIED if name not in have or not have[name].enabled]
        if missing:
            self.down()
            self._fail(f"toxiproxy started without the proxies {', '.join(missing)} ({why})")

    def status(self) -> Status:
        return replace(super().status(), data_dir=None)  # no data: proxies.json is rewritten

    def ping(self, timeout_s: float) -> bool:
        return probes.toxiproxy_version(HOST, self.port, timeout_s) is not None

    def version(self) -> str | None:
        """The running server's answer; a ``go install`` build says ``git``: the pinned one."""
        found = probes.toxiproxy_version(HOST, self.port, 1.0)
        if found and found[0].isdigit():
            return found
        return TOXIPROXY_VERSION if self.is_installed() else None


__all__ = [
    "PROXIED",
    "TOXIPROXY_VERSION",
    "Toxiproxy",
    "client",
    "point_proxies",
    "proxied_url",
    "proxy_specs",
    "upstream",
]
