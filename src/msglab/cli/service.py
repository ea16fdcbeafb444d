"""What every long-running command (``worker``, ``relay``, ``batch receive``) does the same way:
a log line per event on stderr at a chosen level, and a stop on signals: the first SIGTERM or
Ctrl-C asks the work in hand to finish, a second exits at once."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from msglab.errors import UsageError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
EXIT_AT_ONCE = 130  # a second signal: the shell's code for an interrupted command


def log_to_stderr(level: str) -> None:
    """Log lines (``time LEVEL logger: message``) on stderr from ``level`` up; UsageError
    naming the levels for any other."""
    if level.upper() not in LEVELS:
        raise UsageError(f"--log-level {level!r}: use one of {', '.join(LEVELS)}")
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def stop_on_signals(
    log: logging.Logger, doing: str, then: Callable[[], None] = lambda: None
) -> threading.Event:
    """An event the first SIGTERM or SIGINT sets (logging ``doing``, then calling ``then``);
    a second one exits at once with ``EXIT_AT_ONCE``."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second signal: stopping at once")
            logging.shutdown()
            os._exit(EXIT_AT_ONCE)
        log.info("%s: %s (signal again to stop at once)", signal.Signals(signum).name, doing)
        stop.set()
        then()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop
