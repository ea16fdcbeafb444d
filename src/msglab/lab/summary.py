"""Reading a ``compare`` summary: its rows are lab runs (kind "run") or probes (kind "probe")."""

from __future__ import annotations

from typing import Any


def runs(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The lab runs of a compare summary (rows of kind "run")."""
    return [r for r in summary["rows"] if r.get("kind", "run") == "run"]


def probes(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The probes of a compare summary (rows of kind "probe")."""
    return [r for r in summary["rows"] if r.get("kind") == "probe"]
