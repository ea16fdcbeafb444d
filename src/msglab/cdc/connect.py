"""A small client of Kafka Connect's REST API: connector configs, status, pause/resume, restart,
delete, and waiting until a connector and its tasks run.

External-call hygiene (docs/guarantees.md): a connection not made within ``connect_timeout_s``
(3-5 s) and a reply not read within ``read_timeout_s`` (10-30 s) are errors naming the URL.
Only calls that are safe to repeat are retried, at most twice: reads and idempotent writes
(``PUT .../config``, pause, resume, delete) on a connection failure; they also wait out a
rebalance of the worker group (``409``, or ``500`` "a rebalance is expected", for up to
``REBALANCE_WAIT_S``). A restart is retried only when the request could not even be sent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from msglab.config import redact_url
from msglab.errors import ConnectError, TransportError
from msglab.extras import driver_import

with driver_import("cdc", __name__):
    import httpx

NAME = "kafka-connect"
RETRIES = 2
RETRY_DELAY_S = 0.5
REBALANCE_WAIT_S = 30.0
"""How long an idempotent call waits out a rebalance of the worker group (after a worker
restart Connect answers 409, or 500 "a rebalance is expected", for a few seconds)."""


class ConnectorError(TransportError):
    """Kafka Connect answered with an error (``status`` is the HTTP status, or None when a
    connector or task reported FAILED)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TaskState:
    id: int
    state: str  # RUNNING, PAUSED, FAILED, UNASSIGNED, RESTARTING, STOPPED
    worker_id: str
    trace: str | None = None


@dataclass(frozen=True)
class ConnectorStatus:
    """``GET /connectors/{name}/status``."""

    name: str
    state: str
    worker_id: str
    tasks: tuple[TaskState, ...]
    trace: str | None = None

    @property
    def running(self) -> bool:
        """The connector and every one of its tasks (at least one) are RUNNING."""
        return (
            self.state == "RUNNING"
            and bool(self.tasks)
            and all(t.state == "RUNNING" for t in self.tasks)
        )

    @property
    def failure(self) -> str | None:
        """The first FAILED connector or task with its trace, or None."""
        if self.state == "FAILED":
            return f"connector {self.name} FAILED: {trace_summary(self.trace)}"
        for t in self.tasks:
            if t.state == "FAILED":
                return f"connector {self.name} task {t.id} FAILED: {trace_summary(t.trace)}"
        return None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ConnectorStatus:
        connector = body.get("connector", {})
        return cls(
            name=str(body.get("name", "")),
            state=str(connector.get("state", "UNKNOWN")),
            worker_id=str(connector.get("worker_id", "")),
            trace=connector.get("trace"),
            tasks=tuple(
                TaskState(
                    int(t["id"]), str(t["state"]), str(t.get("worker_id", "")), t.get("trace")
                )
                for t in body.get("tasks", [])
            ),
        )


def trace_summary(trace: str | None, limit: int = 600) -> str:
    """A worker's Java stack trace on one line: its first line (the exception and its message)
    and each ``Caused by:`` line, joined by `` <- ``, at most ``limit`` characters; the
    ``at ...`` frames are left out (``msglab cdc status NAME --json`` shows the whole trace)."""
    if not trace:
        return "no trace"
    lines = [line.strip() for line in trace.strip().splitlines()]
    causes = [
        line.removeprefix("Caused by: ") for line in lines[1:] if line.startswith("Caused by:")
    ]
    text = " <- ".join(dict.fromkeys([lines[0], *causes]))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConnectClient:
    """Kafka Connect's REST API at ``url`` (``http://host:port``). Thread-safe; close() it."""

    def __init__(
        self, url: str, connect_timeout_s: float = 5.0, read_timeout_s: float = 30.0
    ) -> None:
        self.url = url.rstrip("/")
        self.shown_url = redact_url(self.url)  # for messages: the password hidden
        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConnectClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the calls ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotent: bool = True,
        allow: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One call; retried (idempotent calls on a lost connection or during a rebalance, any
        call when it was not sent). Raises ConnectError when the worker is unreachable,
        ConnectorError on an error status not in ``allow``."""
        last: Exception | None = None
        attempt = 0
        rebalance_deadline = time.monotonic() + REBALANCE_WAIT_S
        while attempt <= RETRIES:
            if attempt:
                time.sleep(RETRY_DELAY_S * attempt)
            attempt += 1
            try:
                response = self._http.request(method, path, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never sent
                last = exc
                continue
            except httpx.TransportError as exc:  # sent, fate unknown: repeat only if harmless
                last = exc
                if idempotent:
                    continue
                raise TransportError(
                    f"{NAME}: {method} {self.shown_url}{path} failed, outcome unknown: {exc}"
                ) from exc
            if _rebalancing(response) and idempotent and time.monotonic() < rebalance_deadline:
                attempt = 0  # the worker answers: wait out the rebalance, not the retries
                time.sleep(RETRY_DELAY_S)
                continue
            if response.status_code >= 400 and response.status_code not in allow:
                raise ConnectorError(
                    f"{NAME}: {method} {self.shown_url}{path} -> {response.status_code}: "
                    f"{_error_text(response)}",
                    response.status_code,
                )
            return response
        raise ConnectError(NAME, self.shown_url, f"{type(last).__name__}: {last}") from last

    def connectors(self) -> list[str]:
        return list(self._request("GET", "/connectors").json())

    def exists(self, name: str) -> bool:
        return self._request("GET", _path(name), allow=(404,)).status_code == 200

    def put_config(self, name: str, config: Mapping[str, str]) -> dict[str, Any]:
        """Create the connector or update its config (idempotent); Connect's answer."""
        body = {k: str(v) for k, v in config.items()}
        return dict(self._request("PUT", _path(name, "config"), body).json())

    def get_config(self, name: str) -> dict[str, str]:
        return dict(self._request("GET", _path(name, "config")).json())

    def task_configs(self, name: str) -> list[dict[str, str]]:
        """Each task's config as the connector generated it (``GET .../tasks``)."""
        tasks = self._request("GET", _path(name, "tasks")).json()
        return [dict(t.get("config", {})) for t in tasks]

    def status(self, name: str) -> ConnectorStatus:
        return ConnectorStatus.from_json(self._request("GET", _path(name, "status")).json())

    def pause(self, name: str) -> None:
        self._request("PUT", _path(name, "pause"))

    def resume(self, name: str) -> None:
        self._request("PUT", _path(name, "resume"))

    def restart(self, name: str, include_tasks: bool = True, only_failed: bool = False) -> None:
        query = f"?includeTasks={str(include_tasks).lower()}&onlyFailed={str(only_failed).lower()}"
        self._request("POST", _path(name, "restart") + query, idempotent=False)

    def delete(self, name: str) -> bool:
        """Delete the connector; False if there was none."""
        return self._request("DELETE", _path(name), allow=(404,)).status_code != 404

    def offsets(self, name: str) -> list[dict[str, Any]]:
        """The source offsets the connector committed (``GET .../offsets``, KIP-875, Kafka
        Connect >= 3.6): one ``{"partition": {...}, "offset": {...}}`` per source partition;
        Debezium's PostgreSQL connector has one, its offset holds the ``lsn`` it published up
        to (empty before its first flush)."""
        return list(self._request("GET", _path(name, "offsets")).json().get("offsets", []))

    def wait_running(self, name: str, timeout_s: float = 60.0) -> ConnectorStatus:
        """Wait until the connector and all its tasks are RUNNING; raise ConnectorError at once
        when one FAILED (with its trace), or when ``timeout_s`` passed (with the last state)."""
        deadline = time.monotonic() + timeout_s
        last = "not created"
        while True:
            response = self._request("GET", _path(name, "status"), allow=(404,))
            if response.status_code == 200:
                status = ConnectorStatus.from_json(response.json())
                if status.running:
                    return status
                if status.failure:
                    raise ConnectorError(f"{NAME}: {status.failure}")
                last = f"connector {status.state}, tasks " + (
                    ", ".join(f"{t.id}:{t.state}" for t in status.tasks) or "none yet"
                )
            if time.monotonic() > deadline:
                raise ConnectorError(
                    f"{NAME}: connector {name} at {self.shown_url} not RUNNING after "
                    f"{timeout_s:.0f}s ({last})"
                )
            time.sleep(0.2)

    def wait_gone(self, name: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.exists(name):
            if time.monotonic() > deadline:
                raise ConnectorError(f"{NAME}: connector {name} still there after {timeout_s}s")
            time.sleep(0.2)


def _path(name: str, *rest: str) -> str:
    return "/".join(["/connectors", quote(name, safe=""), *rest])


def _rebalancing(response: httpx.Response) -> bool:
    return response.status_code == 409 or (
        response.status_code == 500 and "rebalance" in _error_text(response).lower()
    )


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return str(body)[:500]
