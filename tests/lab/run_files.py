"""A lab run's evidence files read back in tests with plain JSON, independently of
``msglab.lab.evidence``'s fast readers, so that a report's counts are recomputed, not repeated."""

from __future__ import annotations

import json
from pathlib import Path


def ids(path: Path, outcome: str | None = None) -> set[str]:
    """The message ids of a JSON Lines evidence file (those with ``outcome`` only, if given)."""
    return {
        row["id"]
        for row in map(json.loads, path.read_text().splitlines())
        if outcome is None or row["outcome"] == outcome
    }


def confirmed(folder: Path) -> set[str]:
    """Every message a producer of the run in ``folder`` had confirmed (outcome ``ok``)."""
    return set().union(*(ids(p, "ok") for p in folder.glob("sends-*.jsonl")))


def delivered(folder: Path) -> set[str]:
    return set().union(*(ids(p) for p in folder.glob("deliveries-c*.jsonl")))


def stored(folder: Path, name: str = "stored-s0") -> set[str]:
    """What the broker (``stored-s0``) or the database (``stored-db``) kept after the run."""
    return ids(folder / f"{name}.jsonl")
