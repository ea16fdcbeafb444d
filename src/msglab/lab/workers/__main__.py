"""``python -m msglab.lab.workers ROLE NAME RUN_ID`` with the WorkerSpec as JSON on standard
input (the command line names the worker for ``ps``; the spec holds passwords)."""

from __future__ import annotations

import faulthandler
import gc
import json
import signal
import sys
from collections.abc import Callable

from msglab.lab.workers.consumer import consume
from msglab.lab.workers.producer import produce
from msglab.lab.workers.reader import read_output, read_output_kept, read_stored, replay
from msglab.lab.workers.relay import relay
from msglab.lab.workers.spec import WorkerSpec

ROLES: dict[str, Callable[[WorkerSpec], None]] = {
    "producer": produce,
    "consumer": consume,
    "replayer": replay,
    "storage": read_stored,
    "output": read_output,
    "output-kept": read_output_kept,
    "relay": relay,
}


def main(argv: list[str]) -> None:
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps every thread's stack
    role = argv[0]
    spec = WorkerSpec(**json.loads(sys.stdin.read()))
    # A worker holds thousands of messages in flight, and every young collection would walk
    # them (10-15 % of a Kafka producer's time, measured). Its loops make no reference
    # cycles, so collections can be rare; what exists at start-up is never collected.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    ROLES[role](spec)


if __name__ == "__main__":
    main(sys.argv[1:])
