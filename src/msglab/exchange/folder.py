"""An exchange folder: the files transport's root (``msglab.brokers.files``) with an owner.

``<root>/.exchange.json`` says who owns the folder: ``{"mode": "inbox"}`` (push: the
consumer's folder, producers write into it) or ``{"mode": "outbox"}`` (pull: the producer's
folder, consumers take from it). Topic T is ``<root>/T/`` exactly as the files transport lays
it out (batches, ``.groups/``, ``.quarantine/``); this module adds:

* in an inbox, ``<root>/T/processed/``: a batch done for the inbox's group is moved there
  (manifest first, then data; the group's state files of it removed) and deleted once older
  than the consumer's retention (``sweep``; its age counts from the move).
* in an outbox, batches stay where they are (each group's progress is its own, a group that
  starts later reads every batch still there) until the producer's retention deletes them by
  age (``expire_outbox``), read or not.
* ``<root>/T/.groups/G/.quarantine/``: in an outbox, a copy of a batch group G gave up on
  (``give_up``), with ``<name>.reason``; the batch stays for the other groups. In an inbox a
  batch given up on goes to the transport's ``<root>/T/.quarantine/`` (it has one reader).

An inbox has one reader per topic (``check_reader``): a second group would find batches moved
to ``processed/`` by the first before it read them; several groups read from an outbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from msglab.brokers.files import DATA, GROUPS, MANIFEST, QUARANTINE, quarantine
from msglab.errors import UsageError

MARKER = ".exchange.json"
INBOX, OUTBOX = "inbox", "outbox"
PROCESSED = "processed"
STATE = (".done", ".progress", ".lock")  # a group's files for one batch


def mode_of(root: Path) -> str | None:
    """``inbox`` or ``outbox`` as the marker says; None when ``root`` has no marker."""
    try:
        mode = json.loads((root / MARKER).read_text()).get("mode")
    except FileNotFoundError:
        return None
    except (ValueError, AttributeError) as exc:
        raise UsageError(f"{root / MARKER} is not an exchange marker: {exc}") from None
    if mode not in (INBOX, OUTBOX):
        raise UsageError(f"{root / MARKER}: mode {mode!r}; valid: {INBOX}, {OUTBOX}")
    return str(mode)


def claim(root: Path, mode: str) -> None:
    """Make ``root`` an exchange folder of ``mode``, creating it if missing; UsageError when it
    holds something else (another mode, or files without a marker)."""
    found = mode_of(root) if root.is_dir() else None
    if found == mode:
        return
    if found is not None:
        raise UsageError(f"{root} is an {found}, not an {mode}: {_HINT[found]}")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"{root} is not empty and has no {MARKER}: not an exchange folder")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"mode": mode}) + "\n")
    os.rename(tmp, root / MARKER)


_HINT = {
    INBOX: "a consumer's inbox (push): send into it with --to",
    OUTBOX: "a producer's outbox (pull): send into it with --outbox",
}


def check_inbox(root: Path) -> None:
    """UsageError unless ``root`` is an inbox: a producer pushes only into an inbox its
    consumer made (``msglab batch receive`` creates one)."""
    if not root.is_dir() or mode_of(root) is None:
        raise UsageError(
            f"no inbox at {root}: its consumer creates it (msglab batch receive --from {root})"
        )
    claim(root, INBOX)


def check_reader(root: Path, topic: str, group: str) -> None:
    """In an inbox, UsageError when another group already reads ``topic``."""
    if mode_of(root) != INBOX:
        return
    groups = root / topic / GROUPS
    others = sorted(g.name for g in groups.iterdir() if g.name != group) if groups.is_dir() else []
    if others:
        raise UsageError(
            f"inbox {root}: topic {topic} is read by group {others[0]}; an inbox has one "
            "reader (several groups: send into an outbox with --outbox)"
        )


def _groups(tdir: Path) -> list[Path]:
    g = tdir / GROUPS
    return [p for p in g.iterdir() if p.is_dir()] if g.is_dir() else []


def _batches(tdir: Path) -> list[str]:
    """The batch names of a topic folder that have a manifest, in order."""
    return sorted(
        e.name[: -len(MANIFEST)]
        for e in os.scandir(tdir)
        if e.name.endswith(MANIFEST) and not e.name.startswith(".")
    )


def _forget(tdir: Path, name: str) -> None:
    for g in _groups(tdir):
        for suffix in STATE:
            (g / f"{name}{suffix}").unlink(missing_ok=True)


def sweep(tdir: Path, keep_s: float | None) -> list[str]:
    """An inbox's housekeeping: move the batches done for its group to ``processed/``; delete
    processed batches moved more than ``keep_s`` ago (None: keep them). The names moved."""
    if not tdir.is_dir():
        return []
    groups = _groups(tdir)
    moved = []
    processed = tdir / PROCESSED
    for name in _batches(tdir) if groups else []:
        if all((g / f"{name}.done").exists() for g in groups):
            processed.mkdir(exist_ok=True)
            try:
                os.rename(tdir / f"{name}{MANIFEST}", processed / f"{name}{MANIFEST}")
            except FileNotFoundError:
                continue  # another member moved it
            with contextlib.suppress(FileNotFoundError):
                os.rename(tdir / f"{name}{DATA}", processed / f"{name}{DATA}")
            os.utime(processed / f"{name}{MANIFEST}")  # the retention counts from here
            _forget(tdir, name)
            moved.append(name)
    if keep_s is not None and processed.is_dir():
        _expire(processed, keep_s, lambda name: None)
    return moved


def expire_outbox(tdir: Path, keep_s: float) -> int:
    """An outbox's retention, the producer's: delete the batches written more than ``keep_s``
    ago, whether every group read them or not (as a Kafka topic's retention), with the groups'
    state of them. How many were deleted."""
    return _expire(tdir, keep_s, lambda name: _forget(tdir, name)) if tdir.is_dir() else 0


def _expire(d: Path, keep_s: float, forget: Callable[[str], None]) -> int:
    """Delete the batches of ``d`` whose manifest is older than ``keep_s``, manifest first."""
    cutoff, deleted = time.time() - keep_s, 0
    for m in d.glob(f"*{MANIFEST}"):
        with contextlib.suppress(FileNotFoundError):
            if m.stat().st_mtime < cutoff and not m.name.startswith("."):
                name = m.name[: -len(MANIFEST)]
                m.unlink()
                (d / f"{name}{DATA}").unlink(missing_ok=True)
                forget(name)
                deleted += 1
    return deleted


def give_up(root: Path, topic: str, group: str, name: str, reason: str) -> Path:
    """Set aside batch ``name`` that ``group`` could not process (after it settled it for the
    group): in an inbox it moves to ``T/.quarantine/``; in an outbox a copy goes to
    ``T/.groups/G/.quarantine/`` and the batch stays for the other groups. Where it went."""
    tdir = root / topic
    if mode_of(root) != OUTBOX:
        quarantine(tdir, name, reason)
        _forget(tdir, name)
        return tdir / QUARANTINE
    q = tdir / GROUPS / group / QUARANTINE
    q.mkdir(exist_ok=True)
    for suffix in (DATA, MANIFEST):
        with contextlib.suppress(FileNotFoundError):
            shutil.copy2(tdir / f"{name}{suffix}", q / f"{name}{suffix}")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    (q / f"{name}.reason").write_text(f"{reason}\n(quarantined {stamp}, pid {os.getpid()})\n")
    return q


@dataclass
class Quarantined:
    """A batch set aside: its topic, name, the group that gave up on it (None: taken from every
    group, the transport's quarantine) and the first line of its reason."""

    topic: str
    batch: str
    group: str | None
    reason: str


@dataclass
class TopicStatus:
    """A topic's batches: ``pending`` (no group began it), ``in_progress`` (a group began it,
    not every group is done), ``processed`` (done for every group: in an inbox, moved to
    ``processed/`` or about to be; in an outbox, still in place), ``quarantined`` (the
    transport's and the groups' quarantines)."""

    topic: str
    pending: int = 0
    in_progress: int = 0
    processed: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)


def status(root: Path) -> list[TopicStatus]:
    """Every topic of exchange folder ``root``; UsageError when there is no folder."""
    if not root.is_dir():
        raise UsageError(f"no exchange folder at {root}")
    out = []
    for tdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        s = TopicStatus(tdir.name)
        groups = _groups(tdir)
        for name in _batches(tdir):
            done = [(g / f"{name}.done").exists() for g in groups]
            if groups and all(done):
                s.processed += 1
            elif any(done) or any((g / f"{name}.progress").exists() for g in groups):
                s.in_progress += 1
            else:
                s.pending += 1
        if (tdir / PROCESSED).is_dir():
            s.processed += sum(1 for _ in (tdir / PROCESSED).glob(f"*{MANIFEST}"))
        places = [(None, tdir / QUARANTINE)] + [(g.name, g / QUARANTINE) for g in groups]
        for group, q in places:
            for r in sorted(q.glob("*.reason")) if q.is_dir() else []:
                reason = r.read_text(errors="replace").partition("\n")[0]
                s.quarantined.append(Quarantined(tdir.name, r.name[:-7], group, reason))
        out.append(s)
    return out


def quarantined_batches(tdir: Path) -> list[tuple[Quarantined, list[str]]]:
    """The batches of topic folder ``tdir``'s transport quarantine, each with the message ids
    of its lines that still read (a damaged line's, and those cut off, are gone)."""
    q = tdir / QUARANTINE
    out = []
    for r in sorted(q.glob("*.reason")) if q.is_dir() else []:
        name = r.name[: -len(".reason")]
        ids = []
        with contextlib.suppress(FileNotFoundError):
            for line in (q / f"{name}{DATA}").read_bytes().split(b"\n"):
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    ids.append(str(json.loads(line)["id"]))
        reason = r.read_text(errors="replace").partition("\n")[0]
        out.append((Quarantined(tdir.name, name, None, reason), ids))
    return out
