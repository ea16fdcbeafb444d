"""Sending a JSON Lines file as batches into an exchange folder.

A record is one line holding one JSON object; the message's payload is that line's bytes as
written (UTF-8, its line ending removed), so a receiver gets back exactly the lines sent. Blank
lines are skipped. The whole input is checked before anything is written: one bad line and
nothing is sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from msglab.brokers.files import FilesTransport
from msglab.config import ClientConfig
from msglab.errors import UsageError
from msglab.message import Message

EXCERPT = 40  # characters of a bad line shown in the error


def records(data: bytes, source: str, max_bytes: int) -> list[bytes]:
    """The records of JSON Lines ``data``; UsageError naming the first bad line (its number
    and an excerpt) of ``source``."""
    out = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        why = _bad(line, max_bytes)
        if why:
            text = line.decode("utf-8", "replace")
            excerpt = text if len(text) <= EXCERPT else text[: EXCERPT - 3] + "..."
            raise UsageError(f"{source} line {number}: {why}: {excerpt!r}; nothing was sent")
        out.append(line)
    return out


def _bad(line: bytes, max_bytes: int) -> str | None:
    """Why ``line`` is not a record, or None."""
    if len(line) > max_bytes:
        return f"{len(line)} bytes, more than {max_bytes}"
    try:
        value = json.loads(line)
    except UnicodeDecodeError:
        return "not UTF-8"
    except ValueError as exc:
        return f"not JSON ({exc.args[0].partition(':')[0]})"
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not an object"
    return None


@dataclass(frozen=True)
class Sent:
    records: int
    batches: int
    folder: Path


def send(root: Path, topic: str, lines: list[bytes], batch_size: int) -> Sent:
    """Write ``lines`` into ``<root>/<topic>/`` as batches of ``batch_size`` records, each
    atomically (the files transport's at-least-once publish). A PublishError names the batch
    that failed; the batches before it are written."""
    if batch_size < 1:
        raise UsageError(f"--batch {batch_size}: use 1 or more")
    publisher = FilesTransport(ClientConfig(url=f"file://{root}")).publisher()
    batches = 0
    try:
        for start in range(0, len(lines), batch_size):
            publisher.publish(topic, [Message(line) for line in lines[start : start + batch_size]])
            batches += 1
    finally:
        publisher.close()
    return Sent(len(lines), batches, root / topic)
