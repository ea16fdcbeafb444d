"""A client of Toxiproxy's HTTP API (v2.12), standard library only: proxies, toxics, reset.

Toxiproxy forwards TCP connections from a ``listen`` address to an ``upstream`` one; *toxics*
on a proxy fault that traffic (``latency``, ``timeout`` with 0 = blackhole, ``reset_peer``,
``bandwidth``, ``slicer``, ``limit_data``, ``slow_close``), in one direction: ``downstream``
(server -> client, the default) or ``upstream`` (client -> server). A disabled proxy refuses
connections and drops the open ones. Every call has a timeout; an unknown proxy or toxic name,
or a toxic the server refuses, raises UsageError; an unreachable server or any other failed
call raises InfraError naming the URL.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from msglab.errors import InfraError, UsageError

Stream = Literal["downstream", "upstream"]


@dataclass(frozen=True)
class ProxySpec:
    """One proxy to create: clients connect to ``listen``, Toxiproxy forwards to ``upstream``."""

    name: str
    listen: str  # host:port
    upstream: str  # host:port

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": True,
        }


@dataclass(frozen=True)
class Toxic:
    """A toxic active on a proxy, as the server reports it."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Toxic:
        return cls(
            name=str(raw["name"]),
            type=str(raw["type"]),
            stream=str(raw.get("stream", "downstream")),
            toxicity=float(raw.get("toxicity", 1.0)),
            attributes=dict(raw.get("attributes") or {}),
        )


@dataclass(frozen=True)
class Proxy:
    """A proxy as the server reports it: addresses, whether it accepts connections, its toxics."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[Toxic, ...] = ()

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Proxy:
        return cls(
            name=str(raw["name"]),
            listen=str(raw["listen"]),
            upstream=str(raw["upstream"]),
            enabled=bool(raw["enabled"]),
            toxics=tuple(Toxic.from_json(t) for t in raw.get("toxics") or ()),
        )


class ToxiproxyClient:
    """Talks to one Toxiproxy server at ``url`` (``http://host:port``); each call waits at most
    ``timeout_s``. Thread-safe: every call is one HTTP request on a connection of its own."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def version(self) -> str:
        """The server's version string (``git`` for a binary built by ``go install``)."""
        return str(self._call("GET", "/version")["version"])

    def proxies(self) -> dict[str, Proxy]:
        """Every proxy by name, with its active toxics."""
        return {name: Proxy.from_json(raw) for name, raw in self._call("GET", "/proxies").items()}

    def proxy(self, name: str) -> Proxy:
        return Proxy.from_json(self._call("GET", f"/proxies/{quote(name, safe='')}", proxy=name))

    def populate(self, specs: Iterable[ProxySpec]) -> list[Proxy]:
        """Create the proxies, or replace those whose addresses differ (idempotent)."""
        body = [s.to_json() for s in specs]
        answer = self._call("POST", "/populate", body)
        return [Proxy.from_json(raw) for raw in answer.get("proxies", [])]

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset")

    def add_toxic(
        self,
        proxy: str,
        name: str,
        type: str,
        attributes: Mapping[str, Any],
        stream: Stream = "downstream",
        toxicity: float = 1.0,
    ) -> Toxic:
        """Add toxic ``name`` of ``type`` to ``proxy``; it affects connections open and new.

        Raises UsageError for an unknown proxy, a name already used on the proxy, an unknown
        type or a stream other than ``downstream`` / ``upstream``.
        """
        if stream not in ("downstream", "upstream"):
            raise UsageError(f"toxic stream {stream!r}; valid: downstream, upstream")
        body = {
            "name": name,
            "type": type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": dict(attributes),
        }
        path = f"/proxies/{quote(proxy, safe='')}/toxics"
        return Toxic.from_json(self._call("POST", path, body, proxy=proxy))

    def remove_toxic(self, proxy: str, name: str) -> None:
        """Remove toxic ``name`` from ``proxy``; UsageError if there is no such proxy or toxic."""
        path = f"/proxies/{quote(proxy, safe='')}/toxics/{quote(name, safe='')}"
        self._call("DELETE", path, proxy=proxy)

    def set_enabled(self, proxy: str, enabled: bool) -> Proxy:
        """Disable (refuse connections, drop the open ones) or re-enable ``proxy``."""
        path = f"/proxies/{quote(proxy, safe='')}"
        return Proxy.from_json(self._call("PATCH", path, {"enabled": enabled}, proxy=proxy))

    # -- one HTTP call ---------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: object = None, proxy: str | None = None
    ) -> dict[str, Any]:
        target = f"{self.url}{path}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(target, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._refused(method, target, exc, proxy) from exc
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            reason = getattr(exc, "reason", exc)
            raise InfraError(f"toxiproxy: {method} {target} failed: {reason}") from exc
        if not raw:
            return {}
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            text = f"toxiproxy: {method} {target} answered non-JSON: {raw[:200]!r}"
            raise InfraError(text) from exc
        return answer if isinstance(answer, dict) else {"items": answer}

    def _refused(
        self, method: str, target: str, exc: urllib.error.HTTPError, proxy: str | None
    ) -> Exception:
        try:
            message = str(json.loads(exc.read())["error"])
        except (ValueError, KeyError, TypeError, OSError):
            message = exc.reason if isinstance(exc.reason, str) else str(exc)
        if message == "proxy not found" and proxy is not None:
            try:
                valid = ", ".join(sorted(self.proxies())) or "none"
            except InfraError:
                valid = "unknown"
            return UsageError(f"toxiproxy at {self.url} has no proxy {proxy!r}; valid: {valid}")
        text = f"toxiproxy: {method} {target} answered {exc.code}: {message}"
        return UsageError(text) if 400 <= exc.code < 500 else InfraError(text)
