"""Settings a run can turn (``msglab run --set KEY=VALUE``): the server settings that decide
durability, applied for the run, read back from the server into the report, and put back after.

Each knob names the server it sets; msglab sets only servers it owns (a server given by
``MSGLAB_<SERVICE>_URL`` is someone else's to configure). What the report's ``settings`` say is
read from the servers the run used, never taken from msglab's defaults.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from msglab.errors import MsglabError, UsageError
from msglab.infra.native import NativeBackend
from msglab.settings import Settings


@dataclass(frozen=True)
class Knob:
    """``key`` on ``service``, one of ``values``."""

    key: str
    service: str
    values: tuple[str, ...]
    does: str


KNOBS: dict[str, Knob] = {
    k.key: k
    for k in (
        Knob(
            "appendfsync",
            "redis",
            ("always", "everysec", "no"),
            "Redis AOF: fsync every write, once a second, or never (the OS decides)",
        ),
        Knob(
            "synchronous_commit",
            "postgres",
            ("on", "off"),
            "PostgreSQL: a commit returns after its WAL is flushed (on) or before (off)",
        ),
    )
}


def parse(pairs: Iterable[str]) -> dict[str, str]:
    """``["appendfsync=no", ...]`` as a dict; UsageError naming the valid keys or values."""
    chosen: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise UsageError(f"--set {pair!r}: use KEY=VALUE, e.g. appendfsync=no")
        if key not in KNOBS:
            raise UsageError(f"--set: unknown setting {key!r}; valid: {', '.join(KNOBS)}")
        if value not in KNOBS[key].values:
            valid = ", ".join(KNOBS[key].values)
            raise UsageError(f"--set {key}: unknown value {value!r}; valid: {valid}")
        chosen[key] = value
    return chosen


class Dials:
    """The knobs of one run on msglab's servers: ``apply`` sets them (remembering what was
    there), ``reapply`` sets a restarted server's again, ``restore`` puts them back, and
    ``read_back`` reads every knob of the given services from the servers."""

    def __init__(self, settings: Settings, chosen: Mapping[str, str]) -> None:
        self._settings = settings
        self._native = NativeBackend(settings)
        self._chosen = dict(chosen)
        self._before: dict[str, str] = {}
        external = sorted({KNOBS[k].service for k in chosen} & set(settings.external))
        if external:
            raise UsageError(
                f"--set changes msglab's own servers, and {', '.join(external)} is external "
                f"(MSGLAB_{external[0].upper()}_URL): configure it where it runs"
            )

    def apply(self) -> None:
        for key, value in self._chosen.items():
            server = self._native.service(KNOBS[key].service)
            self._before[key] = server.setting(key)
            server.set_setting(key, value)

    def reapply(self, service: str) -> None:
        """After ``service`` restarted (a server that forgets run-time settings)."""
        for key, value in self._chosen.items():
            if KNOBS[key].service == service:
                self._native.service(service).set_setting(key, value)

    def restore(self) -> None:
        for key, value in self._before.items():
            self._native.service(KNOBS[key].service).set_setting(key, value)

    def read_back(self, services: Iterable[str]) -> dict[str, str]:
        """``{"redis.appendfsync": "no", ...}``: every knob of ``services`` that msglab's own
        servers answer (an external server's is not read)."""
        found, services = {}, set(services)
        for knob in KNOBS.values():
            if knob.service in services and knob.service not in self._settings.external:
                try:
                    found[f"{knob.service}.{knob.key}"] = self._native.service(
                        knob.service
                    ).setting(knob.key)
                except MsglabError as exc:
                    found[f"{knob.service}.{knob.key}"] = f"unknown ({exc})"
        return found
