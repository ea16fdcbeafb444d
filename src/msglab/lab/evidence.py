"""Raw evidence of a lab run: JSON Lines files in the run's folder (format: docs/evidence.md).

Every worker appends to its own files, one JSON object per line, flushed per line, so a
SIGKILLed worker loses at most the line it was writing. A last line without its newline is
such a torn write: readers skip it (and count it), they never fail on it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

SENDS = "sends"
DELIVERIES = "deliveries"
EFFECTS = "effects"
FAULTS = "faults"
REPLAYS = "replays"
STORED = "stored"  # what the broker still holds after the run (durability faults)


class Ledger:
    """Appends records to ``<dir>/<kind>-<worker>.jsonl``; ``sync`` fsyncs each line."""

    def __init__(self, directory: Path, kind: str, worker: str, sync: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{kind}-{worker}.jsonl"
        self._file: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._sync = sync

    def write(self, record: dict[str, Any]) -> None:
        self.write_lines(json.dumps(record, separators=(",", ":")) + "\n")

    def write_lines(self, lines: str, flush: bool = True) -> None:
        """Append lines already formatted as JSON (each ending in a newline): the hot path
        of the workers; ``flush=False`` leaves them in the buffer until ``flush()``."""
        self._file.write(lines)
        if flush:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        if self._sync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


@dataclass
class ReadStats:
    files: int = 0
    records: int = 0
    torn_lines: int = 0  # a last line cut short by a killed writer
    bad_lines: int = 0  # a complete line that is not a JSON object (should never happen)


def read(directory: Path, kind: str, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Every record of ``kind`` in the run folder, file by file, in each file's order."""
    stats = stats if stats is not None else ReadStats()
    for path in sorted(directory.glob(f"{kind}-*.jsonl")):
        stats.files += 1
        # decoded once per file: json.loads of str skips the per-line encoding detection
        lines = path.read_bytes().decode("utf-8", "replace").split("\n")
        complete, tail = lines[:-1], lines[-1]
        if tail.strip():
            stats.torn_lines += 1
        for raw in complete:
            if not raw.strip():
                continue
            try:
                record = _decode(raw)
            except ValueError:
                stats.bad_lines += 1
                continue
            if not isinstance(record, dict):
                stats.bad_lines += 1
                continue
            stats.records += 1
            yield record


_decode = json.JSONDecoder().decode


class Tail:
    """Follows the files of one kind while workers append to them: each ``new()`` returns the
    complete lines added since the previous call, as bytes (a line still being written waits
    for its newline), reading every byte once."""

    def __init__(self, directory: Path, kind: str) -> None:
        self._dir = directory
        self._kind = kind
        self._offsets: dict[Path, int] = {}

    def new(self) -> bytes:
        chunks: list[bytes] = []
        for path in sorted(self._dir.glob(f"{self._kind}-*.jsonl")):
            offset = self._offsets.get(path, 0)
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            end = data.rfind(b"\n")
            if end >= 0:
                self._offsets[path] = offset + end + 1
                chunks.append(data[: end + 1])
        return b"".join(chunks)
