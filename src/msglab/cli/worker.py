"""``msglab worker MODULE:APP``: runs an App's consumers until stopped.

The first SIGTERM or Ctrl-C stops fetching, lets the handlers in hand finish and settle, and
closes, within ``--grace`` seconds (past it, the process exits and what was in hand comes
again from the broker); a second one exits at once. A lost broker is retried with backoff,
logged at each attempt, for as long as the worker runs.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Annotated

import typer

from msglab.cli.service import log_to_stderr, stop_on_signals
from msglab.ports import Transport
from msglab.profiles import DeliveryProfile

LOG = logging.getLogger("msglab.worker")


def worker(
    target: Annotated[str, typer.Argument(metavar="MODULE:APP", help="The App to run.")],
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this handler (repeatable).")
    ] = None,
    grace: Annotated[
        float,
        typer.Option(min=0, help="Seconds the handlers in hand get to finish after a stop."),
    ] = 10.0,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Handler threads per per-message handler (each key's messages in order on one "
            "of them); default: each handler's own (1 unless registered otherwise).",
        ),
    ] = None,
    instance: Annotated[
        str,
        typer.Option(
            help="This worker's name among the replicas of its exactly-once consumers: the "
            "same after a restart (it takes over, fencing its predecessor), another for each "
            "replica running at once.",
        ),
    ] = "0",
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (counts of every handler "
            "call, durations, in-flight, lag polled every 5 s).",
        ),
    ] = None,
) -> None:
    """Run an App's consumers (`msglab worker myservice.worker:app`) until SIGTERM or
    Ctrl-C: the first lets the handlers in hand finish within --grace seconds, a second
    stops at once. A lost broker is retried with backoff, never given up. --concurrency N
    runs each per-message handler on N threads, a key's messages in order; acks follow the
    order the broker delivered in."""
    from msglab.app.loader import load_app
    from msglab.app.runtime import Runtime, select
    from msglab.cli.messaging import build

    log_to_stderr(log_level)
    app = load_app(target)

    def connect(name: str, profile: DeliveryProfile) -> Transport:
        return build(name, profile.value)

    exporting = None
    if metrics_port is not None:
        from msglab.metrics.exporter import export

        specs = select(app, only or ())
        exporting = export(
            metrics_port, [(connect(s.transport, s.profile), s.topic, s.group) for s in specs]
        )
        LOG.info("metrics on http://127.0.0.1:%d/metrics", exporting.served.port)
    runtime = Runtime(
        app,
        connect,
        only=only or (),
        concurrency=concurrency,
        instance=instance,
        observer_for=None if exporting is None else lambda spec: exporting.observer(spec.transport),
    )
    stopped_at: list[float] = []  # when the first signal came

    def stop() -> None:
        stopped_at.append(time.monotonic())
        runtime.request_stop()

    stop_on_signals(LOG, f"stopping; handlers in hand get {grace:.0f}s", stop)
    runtime.start()
    names = ", ".join(
        f"{s.name} ({s.transport}:{s.topic} as {s.group}, {s.concurrency} thread(s))"
        for s in runtime.specs
    )
    LOG.info("app %s: running %s", app.name, names)
    while not runtime.wait(0.2):
        if stopped_at and time.monotonic() - stopped_at[0] > grace:
            LOG.warning("grace of %.0fs over: exiting with handlers still running", grace)
            logging.shutdown()
            os._exit(1)
    runtime.stop(0)
    if exporting is not None:
        exporting.close()
    LOG.info("app %s: stopped", app.name)
