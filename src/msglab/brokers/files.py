"""Batch exchange through files in a directory: one file per publish call, with a manifest.

Mapping: ``file:///abs/dir`` is the root (created if missing). Topic T is the directory
``<root>/T/``; each ``publish`` call writes its messages as ONE batch: ``<name>.jsonl`` (JSON
Lines, one message a line: ``id``, ``key``, ``headers``, ``payload`` in base64) and
``<name>.manifest`` (message count, byte size and sha256 of the data file). A batch exists
once its manifest does. Names are a zero-padded ``time_ns`` and a random suffix, strictly
increasing within a process, so batches sort in publish order (across processes: in wall-clock
order) and a group reads them in that order: per-key order holds for one producer.

Consumer group G lives in ``<root>/T/.groups/G/`` and starts at the first batch. A member
claims a whole batch with an exclusive non-blocking ``flock`` on ``<name>.lock``; the kernel
drops the lock when the member dies, so the batch goes to the next member that polls. Before
delivering anything the member checks the batch against its manifest (count, size, sha256,
every line parses); a batch that fails is moved to ``<root>/T/.quarantine/`` with a
``<name>.reason`` text, out of every group's way, and nothing of it is delivered. A data file
without a manifest is a batch still being written, unless it was not modified for
``ORPHAN_AFTER_S`` (a producer that died mid-write): then it is quarantined too.

``<name>.progress`` is the group's append-only record of a batch: ``h i..`` (handed out), ``a
i..`` (acked), ``x i..`` (nacked without requeue). ``attempt`` is one more than the hand-outs
recorded, so a message whose member died or closed comes again with ``redelivered`` set; a
hand-out is recorded as the message leaves (written, not fsynced: it survives a killed process,
not a power cut). When every message is settled, ``<name>.done`` ends the batch for the group.

at-least-once: a batch is written under ``.<name>.*.tmp`` names, fsynced, renamed (data, then
manifest) with the directory fsynced after each rename; acks are written at once and fsynced
within ``SYNC_EVERY_S`` (a batch's ack at once), so a power cut can only redeliver.
at-most-once: the data file is written under its final name and the manifest after it, no
fsync (a killed producer can leave a torn file); a member marks a batch done (fsynced) when it
claims it, before handing anything out: a crash loses the rest, nothing comes twice; nack is
ignored. Nothing is ever deleted but by ``delete_topic``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import random
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from msglab.config import ClientConfig, check_name
from msglab.errors import ConfigError, ConnectError, PublishError, TransportError, UsageError
from msglab.lag import Lag
from msglab.message import Batch, Delivery, Message
from msglab.ports import Publisher, Subscriber
from msglab.profiles import DeliveryProfile, refuse_exactly_once
from msglab.subscription import SubscriberBase

NAME = "files"
DATA, MANIFEST = ".jsonl", ".manifest"
GROUPS, QUARANTINE = ".groups", ".quarantine"
ORPHAN_AFTER_S = 60.0  # a data file without a manifest, untouched this long, is a torn batch
SYNC_EVERY_S = 0.2  # single acks are fsynced at least this often
POLL_S = 0.1  # an idle member lists the directory every 0.05-0.15 s (jittered: members share)


def root_of(config: ClientConfig) -> Path:
    """The root directory of ``file:///abs/dir``, created if missing; ConnectError if unusable."""
    url = urlsplit(config.url)
    if url.scheme != "file" or url.netloc not in ("", "localhost") or not url.path.startswith("/"):
        raise ConfigError(f"{NAME}: url must be file:///absolute/dir, not {config.url!r}")
    root = Path(unquote(url.path))
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as exc:
        raise ConnectError(NAME, str(root), exc.strerror or str(exc)) from exc
    return root


def encode(m: Message) -> bytes:
    payload = base64.b64encode(m.payload).decode()
    line = {"id": m.id, "key": m.key, "headers": dict(m.headers), "payload": payload}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    """One data line as a Message; ValueError when it is not a complete message."""
    f = json.loads(line)
    key, headers = f["key"], f["headers"]
    if not isinstance(f["id"], str) or not (key is None or isinstance(key, str)):
        raise ValueError("id or key is not a string")
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ValueError("headers are not strings")
    return Message.unchecked(base64.b64decode(f["payload"], validate=True), key, headers, f["id"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)  # one write: batches fit in memory, a short write raises
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


class FilesPublisher:
    _last = 0  # the last batch time used in this process: names strictly increase
    _names = threading.Lock()

    def __init__(self, transport: FilesTransport) -> None:
        self._config = transport.config
        self._root = root_of(transport.config)
        self._safe = transport.config.profile is not DeliveryProfile.AT_MOST_ONCE
        self._closed = False

    @classmethod
    def _name(cls) -> str:
        with cls._names:
            cls._last = max(time.time_ns(), cls._last + 1)
            return f"{cls._last:020d}-{secrets.token_hex(4)}"

    def publish(self, topic: str, messages: Iterable[Message]) -> None:
        if self._closed:
            raise UsageError("publisher is closed")
        check_name("topic", topic)
        batch = list(messages)
        for m in batch:
            self._config.check_payload(len(m.payload))
        if not batch:
            return
        data = b"".join(map(encode, batch))
        sha = hashlib.sha256(data).hexdigest()
        manifest = {"messages": len(batch), "bytes": len(data), "sha256": sha}
        name, ids = self._name(), tuple(m.id for m in batch)
        d = self._root / topic
        visible = False
        try:
            if not d.is_dir():
                d.mkdir(exist_ok=True)
                if self._safe:
                    _fsync_dir(self._root)
            text = json.dumps(manifest).encode() + b"\n"
            if not self._safe:  # naive: final names at once, no fsync
                _write(d / f"{name}{DATA}", data, sync=False)
                _write(d / f"{name}{MANIFEST}", text, sync=False)
                return
            tmp_data, tmp_manifest = d / f".{name}{DATA}.tmp", d / f".{name}{MANIFEST}.tmp"
            _write(tmp_data, data, sync=True)
            _write(tmp_manifest, text, sync=True)
            os.rename(tmp_data, d / f"{name}{DATA}")
            _fsync_dir(d)  # the data's rename is durable before the manifest's
            os.rename(tmp_manifest, d / f"{name}{MANIFEST}")
            visible = True
            _fsync_dir(d)
        except OSError as exc:
            if not visible:
                for leftover in d.glob(f"*{name}*"):
                    leftover.unlink(missing_ok=True)
            fate = {"unknown": ids} if visible else {"failed": ids}
            raise PublishError(f"{NAME}: batch {name} to {d}: {exc}", **fate) from exc

    def close(self) -> None:
        self._closed = True


class BadBatch(Exception):
    """A batch that does not match its manifest; the text is the quarantine reason."""


def read_batch(d: Path, name: str) -> list[Message] | None:
    """The batch's messages once checked against its manifest; None when it is gone (another
    group quarantined it); BadBatch saying why it cannot be delivered."""
    try:
        manifest = json.loads((d / f"{name}{MANIFEST}").read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise BadBatch(f"manifest is not JSON: {exc}") from None
    try:
        data = (d / f"{name}{DATA}").read_bytes()
    except FileNotFoundError:
        if (d / f"{name}{MANIFEST}").exists():
            raise BadBatch("manifest without a data file") from None
        return None
    if not isinstance(manifest, dict) or not {"messages", "bytes", "sha256"} <= manifest.keys():
        raise BadBatch(f"manifest lacks messages, bytes or sha256: {manifest!r}")
    if len(data) != manifest["bytes"]:
        raise BadBatch(f"data file has {len(data)} bytes, manifest says {manifest['bytes']}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["sha256"]:
        raise BadBatch(f"data sha256 is {digest}, manifest says {manifest['sha256']}")
    lines = data.split(b"\n")
    if lines.pop() != b"" or len(lines) != manifest["messages"]:
        raise BadBatch(f"data has {len(lines)} lines, manifest says {manifest['messages']}")
    messages = []
    for number, line in enumerate(lines, 1):
        try:
            messages.append(decode(line))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise BadBatch(f"line {number} is not a message: {exc!r}") from None
    return messages


def quarantine(d: Path, name: str, reason: str, orphan: bool = False) -> None:
    """Move a batch to ``.quarantine/`` with ``<name>.reason``. The manifest moves first (the
    batch disappears at once); whoever moved it writes the reason, a racing group skips."""
    q = d / QUARANTINE
    q.mkdir(exist_ok=True)
    try:
        if orphan:
            if (q / f"{name}{MANIFEST}").exists():
                return  # someone is quarantining this batch, manifest first
            os.rename(d / f"{name}{DATA}", q / f"{name}{DATA}")
        else:
            os.rename(d / f"{name}{MANIFEST}", q / f"{name}{MANIFEST}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(d / f"{name}{DATA}", q / f"{name}{DATA}")
    except FileNotFoundError:
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    (q / f"{name}.reason").write_text(f"{reason}\n(quarantined {stamp}, pid {os.getpid()})\n")
    _fsync_dir(q)


@dataclass(eq=False)
class _Claim:
    """A batch this member holds: its lock, its progress file and what is left to hand out."""

    name: str
    messages: list[Message]
    lock: int  # the flock'ed file (-1: released)
    progress: int  # the append-only progress file (-1: at-most-once, or released)
    handed: list[int]  # hand-outs of each message so far
    pending: deque[int]  # indexes still to hand out (a nacked one again)
    unsettled: int = 0  # messages not acked yet: the batch is done at 0
    dirty: bool = False  # written since the last fsync


class FilesSubscriber(SubscriberBase):
    """While ``prefetch`` messages are handed out and unsettled, no further batch is claimed
    (polls come back empty, so a consumer that settles in ``on_idle`` settles them)."""

    fetches_batches = True

    def __init__(self, transport: FilesTransport, group: str) -> None:
        super().__init__(group)
        self._config = transport.config
        self._safe = transport.config.profile is not DeliveryProfile.AT_MOST_ONCE
        self._claims: dict[str, _Claim] = {}  # in claim order: batch order
        self._finished: set[str] = set()  # done (or quarantined) for this group
        self._queue: deque[str] = deque()  # listed batches not tried since the listing
        self._outstanding = 0  # handed out, not settled
        self._dir = self._gdir = Path()
        self._synced = 0.0

    def _open(self, topic: str) -> None:
        self._dir = root_of(self._config) / topic
        self._gdir = self._dir / GROUPS / self._group
        with self._boundary():
            self._gdir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _boundary(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise TransportError(f"{NAME}: {self._dir}: {exc}") from exc

    def _deliveries(self, topic: str) -> Iterator[Delivery | None]:
        while not self._closed.is_set():
            taken = self._take(1)
            if taken is None:
                yield None
                continue
            claim, (i,), (attempt,) = taken
            m = claim.messages[i]
            yield Delivery(m, topic, attempt, attempt > 1, self._settle, (claim, i))

    def _batches(self, topic: str, limit: int) -> Iterator[Batch | None]:
        """One Batch per batch file, or per ``limit`` messages of a longer one."""
        while not self._closed.is_set():
            taken = self._take(limit)
            if taken is None:
                yield None
                continue
            claim, indexes, attempts = taken
            messages = [claim.messages[i] for i in indexes]
            yield Batch(topic, messages, attempts, self._settle_batch, (claim, indexes))

    def _take(self, limit: int) -> tuple[_Claim, list[int], list[int]] | None:
        """Up to ``limit`` next messages of one claimed batch (claiming the next batch when
        none is left), recorded as handed out; None after an empty poll and a pause."""
        with self._boundary():
            if time.monotonic() - self._synced >= SYNC_EVERY_S:
                self._sync()
            claim = next((c for c in self._claims.values() if c.pending), None)
            while claim is None:
                if self._outstanding >= self._config.prefetch or not self._claim_next():
                    self._sync()
                    self._closed.wait(POLL_S * random.uniform(0.5, 1.5))
                    return None
                claim = next((c for c in self._claims.values() if c.pending), None)
            indexes = [claim.pending.popleft() for _ in range(min(limit, len(claim.pending)))]
            for i in indexes:
                claim.handed[i] += 1
            if claim.progress >= 0:
                os.write(claim.progress, f"h {' '.join(map(str, indexes))}\n".encode())
                claim.dirty = True
                self._outstanding += len(indexes)
            elif not claim.pending:
                del self._claims[claim.name]  # at-most-once: all handed out, nothing to settle
            return claim, indexes, [claim.handed[i] for i in indexes]

    def _claim_next(self) -> bool:
        """Lock the group's next batch that nobody holds; False when there is none."""
        if not self._queue:
            self._list()
        while self._queue:
            name = self._queue.popleft()
            if name in self._claims or name in self._finished:
                continue
            lock_path = self._gdir / f"{name}.lock"
            lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock)  # another member holds it
                continue
            try:
                claim = self._claim(name, lock)
            except BaseException:
                os.close(lock)
                raise
            if claim is None:
                self._finished.add(name)
                lock_path.unlink(missing_ok=True)
                os.close(lock)
                continue
            self._claims[name] = claim
            if claim.unsettled == 0 and claim.progress >= 0:
                self._finish(claim)  # settled before a crash that came before its .done
                continue
            return True
        return False

    def _claim(self, name: str, lock: int) -> _Claim | None:
        """The locked batch as a claim; None when it is done for the group, gone, or bad (then
        quarantined). The lock is checked before done: a member that finished has unlocked."""
        if (self._gdir / f"{name}.done").exists():
            return None
        try:
            messages = read_batch(self._dir, name)
        except BadBatch as bad:
            quarantine(self._dir, name, f"{bad} (found by group {self._group})")
            return None
        if messages is None:
            return None
        handed = [0] * len(messages)
        if not self._safe:  # at-most-once: done before anything is handed out
            self._mark_done(name)
            (self._gdir / f"{name}.lock").unlink(missing_ok=True)
            os.close(lock)
            return _Claim(name, messages, -1, -1, handed, deque(range(len(messages))))
        path = self._gdir / f"{name}.progress"
        settled: set[int] = set()
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text().splitlines():
                kind, _, rest = line.partition(" ")
                with contextlib.suppress(ValueError, IndexError):  # a torn last line
                    indexes = [int(i) for i in rest.split()]
                    if kind == "h":
                        for i in indexes:
                            handed[i] += 1
                    elif kind in ("a", "x"):
                        settled.update(indexes)
        progress = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        pending = deque(i for i in range(len(messages)) if i not in settled)
        return _Claim(name, messages, lock, progress, handed, pending, len(pending))

    def _list(self) -> None:
        """Queue the topic's batches in name order; a data file long without a manifest is
        quarantined."""
        done = {e.name[:-5] for e in os.scandir(self._gdir) if e.name.endswith(".done")}
        self._finished |= done
        ready, data = set(), {}
        for e in os.scandir(self._dir):
            if e.name.startswith("."):
                continue
            if e.name.endswith(MANIFEST):
                ready.add(e.name[: -len(MANIFEST)])
            elif e.name.endswith(DATA):
                data[e.name[: -len(DATA)]] = e
        self._queue.extend(sorted(ready - self._finished - self._claims.keys()))
        for name, e in data.items():
            if name not in ready and name not in self._finished:
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - e.stat().st_mtime > ORPHAN_AFTER_S:
                        why = f"no manifest {ORPHAN_AFTER_S:g} s after the data file's last write"
                        quarantine(self._dir, name, f"{why} (a producer died mid-write?)", True)

    def _settle(self, d: Delivery, ok: bool, requeue: bool) -> None:
        claim, i = d.token
        self._settle_indexes(claim, [i], ok, requeue, sync=False)

    def _settle_batch(self, b: Batch, ok: bool, requeue: bool) -> None:
        claim, indexes = b.token
        self._settle_indexes(claim, indexes, ok, requeue, sync=True)

    def _settle_indexes(
        self, claim: _Claim, indexes: list[int], ok: bool, requeue: bool, sync: bool
    ) -> None:
        """A settle after the member let go of the batch is dropped (it comes again)."""
        if claim.progress < 0:
            return
        self._outstanding -= len(indexes)
        if not ok and requeue:
            claim.pending.extend(indexes)
            return
        with self._boundary():
            os.write(
                claim.progress, f"{'a' if ok else 'x'} {' '.join(map(str, indexes))}\n".encode()
            )
            claim.dirty = True
            claim.unsettled -= len(indexes)
            if claim.unsettled <= 0:
                self._finish(claim)
            elif sync:
                os.fsync(claim.progress)
                claim.dirty = False

    def _finish(self, claim: _Claim) -> None:
        """Every message is settled: the batch is done for the group."""
        os.fsync(claim.progress)
        self._mark_done(claim.name)
        (self._gdir / f"{claim.name}.lock").unlink(missing_ok=True)  # still held: safe
        self._drop(claim)

    def _mark_done(self, name: str) -> None:
        _write(self._gdir / f"{name}.done", f"{time.time():.6f}\n".encode(), sync=True)
        _fsync_dir(self._gdir)
        self._finished.add(name)

    def _drop(self, claim: _Claim) -> None:
        self._claims.pop(claim.name, None)
        for fd in (claim.progress, claim.lock):
            if fd >= 0:
                os.close(fd)
        claim.progress = claim.lock = -1

    def _sync(self) -> None:
        for claim in self._claims.values():
            if claim.dirty:
                os.fsync(claim.progress)
                claim.dirty = False
        self._synced = time.monotonic()

    def _release(self) -> None:
        """Closing the files drops the locks: what is not acked comes again to the group."""
        try:
            with self._boundary():
                self._sync()
        finally:
            for claim in list(self._claims.values()):
                self._drop(claim)


def batch_name(batch: Batch) -> str:
    """The name of the batch file a ``FilesSubscriber.batches`` Batch comes from (all of its
    messages are of one file): ``<root>/<topic>/<name>.jsonl``."""
    claim: _Claim = batch.token[0]
    return claim.name


def pending_batches(d: Path, gdir: Path) -> Lag:
    """``FilesTransport.lag`` of topic directory ``d`` for the group in ``gdir``."""
    done = {n.name[:-5] for n in gdir.glob("*.done")} if gdir.is_dir() else set()
    names = sorted(
        e.name[: -len(MANIFEST)]
        for e in os.scandir(d)
        if e.name.endswith(MANIFEST) and not e.name.startswith(".")
    )
    batches = backlog = unacked = 0
    for name in names:
        if name in done:
            continue
        try:
            count = int(json.loads((d / f"{name}{MANIFEST}").read_bytes())["messages"])
        except FileNotFoundError:
            continue  # quarantined meanwhile
        except (ValueError, KeyError, TypeError):
            continue  # a bad manifest: the next member to claim it quarantines it
        handed, settled = _progress(gdir / f"{name}.progress")
        batches += 1
        backlog += count - len(settled)
        unacked += len(handed - settled)
    details = {"batches": batches}
    note = f"{batches} batch(es) not done for the group"
    return Lag("batches", backlog, backlog - unacked, unacked, details, note)


def _progress(path: Path) -> tuple[set[int], set[int]]:
    """The indexes a group's progress file records as handed out, and as settled."""
    handed: set[int] = set()
    settled: set[int] = set()
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            kind, _, rest = line.partition(" ")
            with contextlib.suppress(ValueError):  # a torn last line
                indexes = {int(i) for i in rest.split()}
                if kind == "h":
                    handed |= indexes
                elif kind in ("a", "x"):
                    settled |= indexes
    return handed, settled


class FilesTransport:
    name = NAME
    stores_messages = True

    def __init__(self, config: ClientConfig) -> None:
        refuse_exactly_once(self.name, config.profile)
        self.config = config

    def publisher(self) -> Publisher:
        return FilesPublisher(self)

    def subscriber(self, group: str) -> Subscriber:
        return FilesSubscriber(self, group)

    def delete_topic(self, topic: str, groups: Iterable[str]) -> None:
        """Remove the topic's directory: its batches, groups and quarantine."""
        shutil.rmtree(root_of(self.config) / check_name("topic", topic), ignore_errors=True)

    def lag(self, topic: str, group: str) -> list[Lag]:
        """The topic's batches not done for the group (one Lag, ``batches``): their messages
        not settled (``backlog``), of those the ones a member has had (``unacked``: a
        hand-out without an ack or nack in the group's progress file; a dead member's come
        again), and ``details`` ``batches``, how many batches are pending. A group that has
        not subscribed yet starts at the first batch: every batch is pending for it.
        Quarantined batches are no longer the group's."""
        d = root_of(self.config) / check_name("topic", topic)
        if not d.is_dir():
            raise UsageError(f"{NAME}: no topic {topic!r} in {d.parent}")
        try:
            return [pending_batches(d, d / GROUPS / check_name("group", group))]
        except OSError as exc:
            raise TransportError(f"{NAME}: {d}: {exc}") from exc

    @classmethod
    def profile_settings(cls) -> dict[str, dict[str, str]]:
        layout = "<root>/T/<time_ns>-<random>.jsonl + .manifest (count, bytes, sha256)"
        claim = "flock on .groups/G/<batch>.lock (released when the member dies)"
        check = "manifest checked before delivery; a bad batch goes to .quarantine/ with a reason"
        return {
            "at-least-once": {
                "batch": layout,
                "publish": "written to .tmp names and fsynced, renamed data then manifest, "
                "directory fsynced after each rename",
                "claim": claim,
                "check": check,
                "ack": f"appended to .groups/G/<batch>.progress, fsynced within {SYNC_EVERY_S} s "
                "(a batch ack at once); .done when all are settled",
                "redelivery": "nack: again in this member; a dead or closed member's unacked "
                "messages: to the next member that locks the batch",
            },
            "at-most-once": {
                "batch": layout,
                "publish": "data file under its final name, manifest after it, no fsync",
                "claim": claim,
                "check": check,
                "ack": "none: .done (fsynced) when the batch is claimed, before delivery",
                "redelivery": "never (nack ignored; a crash loses the rest of the batch)",
            },
        }
