"""Raw evidence of a lab run: JSON Lines files in the run's folder (format: docs/evidence.md).

Every worker appends to its own files, one JSON object per line, flushed per line, so a
SIGKILLed worker loses at most the line it was writing. A last line without its newline is
such a torn write: readers skip it (and count it), they never fail on it.

This module is the one place that knows the line format: the workers write their lines with
``SendLines``, ``delivery_lines`` and ``read_line``; the orchestrator picks fields out of lines
as they grow with ``ids``, ``confirmed_ids`` and ``first_sendings`` (without parsing JSON: it
follows every line at lab speed); the checker parses whole records with ``read``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _q  # a JSON string literal, fast
from pathlib import Path
from typing import Any, TextIO

SENDS = "sends"
DELIVERIES = "deliveries"
EFFECTS = "effects"
FAULTS = "faults"
REPLAYS = "replays"
STORED = "stored"  # what the broker still holds after the run (durability faults)
DEAD_LETTERS = "dead-letters"  # the poison workload: <topic>.dlq as read after the run
QUARANTINED = "quarantined"  # the files transport: its quarantined batches, read after the run
OUTPUT = "output"  # exactly-once: <topic>-out's committed copies, read once after the run
ORDERS = "orders"  # the run's business rows PostgreSQL holds after the run (database patterns)


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


# -- message ids -------------------------------------------------------------------------


def message_id_prefix(run_id: str, producer: str) -> str:
    """A lab message id is ``<run>-<producer>-<seq>``; this is its part before ``seq``."""
    return f"{run_id}-{producer}-"


def id_parts(mid: str) -> tuple[str | None, str | None]:
    """Producer and seq of a lab message id (None, None for an id that is not a lab id)."""
    parts = mid.rsplit("-", 2)
    if len(parts) == 3 and parts[2].isdigit():
        return parts[1], parts[2]
    return None, None


# -- writing (the workers' hot paths build lines as strings) -------------------------------


class SendLines:
    """A producer's ``sends`` lines. Each message's lines share a middle (seq, id, key) built
    once by ``body``; every attempt writes a ``sending`` line per message before it sends and
    an outcome line (``ok``, ``fail``, ``unknown``) after."""

    def __init__(self, run_id: str, producer: str, keys: list[str]) -> None:
        self._producer = _q(producer)
        self._prefix = _q(message_id_prefix(run_id, producer))[:-1]
        self._keys = [_q(k) for k in keys]

    def body(self, seq: int, key: int) -> str:
        """The middle of message ``seq``'s lines (``key``: an index into the keys)."""
        return f'"seq":{seq},"id":{self._prefix}{seq}","key":{self._keys[key]},"outcome":'

    def sending(self, bodies: list[str], attempt: int, sent_ts: float) -> str:
        head = f'{{"sent_ts":{sent_ts!r},"producer":{self._producer},'
        return "".join(f'{head}{body}"sending","try":{attempt}}}\n' for body in bodies)

    def outcomes(
        self, bodies: list[tuple[str, str]], attempt: int, sent_ts: float, ts: float
    ) -> str:
        """``bodies``: (body, outcome) per message of the attempt."""
        head = f'{{"sent_ts":{sent_ts!r},"producer":{self._producer},'
        tail = f',"try":{attempt},"ts":{ts!r}}}\n'
        return "".join(f'{head}{body}"{outcome}"{tail}' for body, outcome in bodies)


def delivery_lines(consumer: str, deliveries: list[tuple[float, str, int, str | None]]) -> str:
    """A consumer's ``deliveries`` lines: (time, id, attempt, key) per message."""
    lines = []
    head = f',"consumer":{_q(consumer)},"id":'
    for ts, mid, attempt, key in deliveries:
        producer, seq = id_parts(mid)
        lines.append(
            f'{{"ts":{ts!r}{head}{_q(mid)},"attempt":{attempt},'
            f'"redelivered":{"true" if attempt > 1 else "false"},'
            f'"key":{_q_or_null(key)},"producer":{_q_or_null(producer)},'
            f'"seq":{_q_or_null(seq)}}}\n'
        )
    return "".join(lines)


def read_line(consumer: str, mid: str, ts: float) -> str:
    """A ``replays`` or ``stored`` line: what a reader of a second group got."""
    return f'{{"ts":{ts!r},"consumer":{_q(consumer)},"id":{_q(mid)}}}\n'


def _q_or_null(value: str | None) -> str:
    return "null" if value is None else _q(value)


# -- reading lines as they grow, without parsing them ----------------------------------------

_ID = re.compile(rb'"id":"([^"\\\n]*)"')
_OK_ID = re.compile(rb'"id":"([^"\\\n]*)"[^\n]*"outcome":"ok"')  # "id" comes before "outcome"
_FIRST_SENDING = b'"outcome":"sending","try":1}'  # a first attempt's sending line ends so


def ids(lines: bytes) -> list[bytes]:
    """The message id of each line (deliveries, replays, stored)."""
    return _ID.findall(lines)


def confirmed_ids(send_lines: bytes) -> list[bytes]:
    """The ids of the ``ok`` outcome lines among ``sends`` lines."""
    return _OK_ID.findall(send_lines)


def first_sendings(send_lines: bytes) -> int:
    """How many messages were attempted for the first time in ``sends`` lines."""
    return send_lines.count(_FIRST_SENDING)
