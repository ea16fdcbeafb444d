"""What a power cut dropped: a ``CutReport`` per cut, one ``FileLoss`` per file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FileLoss:
    """One file's unsynced data, dropped: ``size`` is what the server saw, ``synced_size`` what
    is left (the backing file), ``dropped_bytes`` the bytes written since its last fsync."""

    path: str  # under the server's data folder
    dropped_bytes: int
    size: int
    synced_size: int

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FileLoss:
        return cls(
            str(raw["path"]).lstrip("/"),
            int(raw["dropped_bytes"]),
            int(raw["size"]),
            int(raw["synced_size"]),
        )


@dataclass(frozen=True)
class CutReport:
    """A power cut of one server: when, the processes killed, what each file lost."""

    service: str
    at: str  # ISO 8601, UTC
    killed: tuple[int, ...]
    files: tuple[FileLoss, ...]

    @property
    def dropped_bytes(self) -> int:
        return sum(f.dropped_bytes for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "dropped_bytes": self.dropped_bytes}

    @classmethod
    def of(
        cls, service: str, at: str, killed: Sequence[int], files: Sequence[Mapping[str, Any]]
    ) -> CutReport:
        losses = (FileLoss.from_json(f) for f in files)
        return cls(
            service,
            at,
            tuple(killed),
            tuple(f for f in losses if f.dropped_bytes or f.size != f.synced_size),
        )
