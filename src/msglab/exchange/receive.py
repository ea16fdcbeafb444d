"""Receiving from an exchange folder: a command run once per batch (``--exec``), or an App.

``run_exec`` reads topic T as group G through the files transport's subscriber, one Batch per
batch file, and runs ``command`` (a shell command line) with the batch's records on stdin, one
a line as they were sent, and in its environment ``MSGLAB_TOPIC``, ``MSGLAB_BATCH`` (the batch's
name) and ``MSGLAB_ATTEMPT`` (1 the first time). Exit 0: the batch is processed (acked, then
in an inbox, moved to ``processed/``). Another exit: the batch runs again after
``retry_delay_s``, up to ``attempts`` runs in all (attempts survive a restart: the transport
counts hand-outs), then the group gives it up (``folder.give_up``) with the command's exit code
and the tail of its stderr as the reason. The command's stdout is the worker's; its stderr is
relayed to the worker's stderr.

Stop: ``stop`` set (SIGTERM) lets the batch in hand finish and settle, then the loop closes the
subscriber and returns; an idle loop sees it within a poll (0.15 s).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from msglab.app.application import App
from msglab.app.runtime import Runtime, select
from msglab.brokers.files import NAME, FilesTransport, batch_name
from msglab.config import ClientConfig
from msglab.errors import UsageError
from msglab.exchange import folder
from msglab.message import Batch
from msglab.ports import Transport
from msglab.profiles import DeliveryProfile

LOG = logging.getLogger("msglab.batch")
MAX_RECORDS = 10_000_000  # one Batch per batch file, whatever its size
SWEEP_EVERY_S = 1.0  # an idle receiver moves done batches and applies the retention this often
TAIL = 300  # characters of the command's stderr kept as the reason


@dataclass(frozen=True)
class Exec:
    """The ``--exec`` handler: ``command`` run by ``/bin/sh -c``; ``attempts`` runs per batch at
    most; ``retry_delay_s`` between them; a run past ``timeout_s`` is killed (its whole process
    group) and counts as a failed attempt."""

    command: str
    attempts: int = 3
    retry_delay_s: float = 1.0
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise UsageError(f"--attempts {self.attempts}: use 1 or more")
        if self.retry_delay_s < 0:
            raise UsageError(f"--retry-delay {self.retry_delay_s}: use 0 or more")
        if self.timeout_s <= 0:
            raise UsageError(f"--timeout {self.timeout_s}: use more than 0")


def run_exec(
    root: Path,
    topic: str,
    group: str,
    handler: Exec,
    keep_s: float | None,
    stop: threading.Event,
) -> None:
    """Hand every batch of ``<root>/<topic>`` to ``handler`` as group ``group`` until ``stop``."""
    folder.check_reader(root, topic, group)
    tdir = root / topic
    inbox = folder.mode_of(root) == folder.INBOX
    sub = FilesTransport(ClientConfig(url=f"file://{root}")).subscriber(group)
    swept = 0.0

    def idle() -> None:
        nonlocal swept
        if stop.is_set():
            sub.close()
        elif inbox and time.monotonic() - swept >= SWEEP_EVERY_S:
            _sweep(tdir, keep_s)
            swept = time.monotonic()

    sub.on_idle(idle)
    LOG.info("receiving %s as group %s: %s", tdir, group, handler.command)
    try:
        for batch in sub.batches(topic, MAX_RECORDS):
            _handle(root, topic, group, batch, handler, stop)
            if inbox:
                _sweep(tdir, keep_s)
            if stop.is_set():
                break
    finally:
        sub.close()
    LOG.info("stopped")


def _handle(
    root: Path, topic: str, group: str, batch: Batch, handler: Exec, stop: threading.Event
) -> None:
    name, attempt = batch_name(batch), max(batch.attempts)
    data = b"".join(m.payload + b"\n" for m in batch.messages)
    env = {**os.environ, "MSGLAB_TOPIC": topic, "MSGLAB_BATCH": name}
    env["MSGLAB_ATTEMPT"] = str(attempt)
    began = time.monotonic()
    code, stderr = _run(handler, data, env)
    sys.stderr.buffer.write(stderr)
    sys.stderr.flush()
    took = time.monotonic() - began
    what = f"batch {name}: {len(batch)} record(s), attempt {attempt}, exit {code}"
    if code == 0:
        batch.ack()
        LOG.info("%s in %.2fs: processed", what, took)
        return
    tail = stderr.decode("utf-8", "replace").strip()[-TAIL:].replace("\n", " | ")
    if code is None:
        tail = f"timed out after {handler.timeout_s:g}s, killed; {tail}"
    if attempt < handler.attempts:
        LOG.warning("%s in %.2fs: again in %gs (%s)", what, took, handler.retry_delay_s, tail)
        stop.wait(handler.retry_delay_s)
        batch.nack(requeue=True)
        return
    batch.nack(requeue=False)  # settled for the group: done, not acked
    reason = f"group {group}: command exited {code} on attempt {attempt}: {tail}"
    where = folder.give_up(root, topic, group, name, reason)
    LOG.error("%s in %.2fs: gave up after %d attempt(s), now in %s", what, took, attempt, where)


def _run(handler: Exec, data: bytes, env: dict[str, str]) -> tuple[int | None, bytes]:
    """The command's exit code (None: killed after ``timeout_s``) and its stderr."""
    proc = subprocess.Popen(
        handler.command,
        shell=True,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group: a timeout kills what it started too
    )
    try:
        _, stderr = proc.communicate(data, timeout=handler.timeout_s)
        return proc.returncode, stderr
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        return None, stderr


def _sweep(tdir: Path, keep_s: float | None) -> None:
    for name in folder.sweep(tdir, keep_s):
        LOG.info("batch %s: moved to %s", name, tdir / folder.PROCESSED)


def run_app(
    root: Path,
    app: App,
    keep_s: float | None,
    stop: threading.Event,
    grace_s: float = 10.0,
) -> bool:
    """Run ``app``'s handlers (all on the files transport, here ``root``) with the runtime of
    ``msglab worker`` until ``stop``: its middleware decides retries and dead letters (the
    folders ``T.retry`` and ``T.dlq`` beside ``T``). In an inbox, done batches move to
    ``processed/`` as in ``run_exec``. Whether the handlers in hand finished within ``grace_s``
    of the stop."""
    specs = select(app)
    for s in specs:
        if s.transport != NAME:
            raise UsageError(
                f"--app runs handlers of the files transport; {s.name} is on {s.transport} "
                "(run it with msglab worker)"
            )
        folder.check_reader(root, s.topic, s.group)

    def connect(name: str, profile: DeliveryProfile) -> Transport:
        return FilesTransport(ClientConfig(url=f"file://{root}", profile=profile))

    runtime = Runtime(app, connect)
    runtime.start()
    topics = sorted({root / s.topic for s in specs})
    LOG.info("app %s: receiving %s", app.name, ", ".join(map(str, topics)))
    if folder.mode_of(root) != folder.INBOX:
        topics = []  # an outbox is its producer's: nothing moves
    while not stop.wait(SWEEP_EVERY_S):
        for tdir in topics:
            _sweep(tdir, keep_s)
    ended = runtime.stop(grace_s)
    for tdir in topics:
        _sweep(tdir, keep_s)
    LOG.info("app %s: stopped", app.name)
    return ended
