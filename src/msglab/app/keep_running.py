"""How every flow of the runtime outlives its broker: run it again after an error, with backoff.

``start_flow(flow, stop, where, name)`` runs ``keep_running`` on a daemon thread.
``keep_running(flow, stop, where)`` runs ``flow`` until it returns or ``stop`` is set. A
``MsglabError`` (the broker away, a subscriber that gave up reconnecting) is logged with the
attempt and the delay, and ``flow`` runs again after a backoff doubling from
``RECONNECT_FIRST_S`` to ``RECONNECT_MAX_S``: a worker never gives up on its broker. An error
of a type in ``final`` is logged and ends it for good (an exactly-once consumer fenced by a
newer instance). Any other exception is logged with its traceback and ``flow`` runs again
after ``RECONNECT_MAX_S``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from msglab.errors import MsglabError

LOG = logging.getLogger("msglab.app")
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.5, 10.0


def keep_running(
    flow: Callable[[], None],
    stop: threading.Event,
    where: str,
    final: tuple[type[BaseException], ...] = (),
) -> None:
    failures_in_a_row = 0
    while not stop.is_set():
        try:
            flow()
            return
        except final as exc:
            LOG.error("%s: %s; it stops", where, exc)
            return
        except MsglabError as exc:
            failures_in_a_row += 1
            delay = min(RECONNECT_MAX_S, RECONNECT_FIRST_S * 2 ** (failures_in_a_row - 1))
            LOG.warning(
                "%s: broker unavailable (%s: %s); subscribing again in %.1fs (attempt %d)",
                where,
                type(exc).__name__,
                exc,
                delay,
                failures_in_a_row,
            )
            stop.wait(delay)
        except Exception:
            failures_in_a_row += 1
            LOG.exception("%s failed; starting it again", where)
            stop.wait(RECONNECT_MAX_S)


def start_flow(
    flow: Callable[[], None],
    stop: threading.Event,
    where: str,
    name: str,
    final: tuple[type[BaseException], ...] = (),
) -> threading.Thread:
    """``keep_running(flow, stop, where, final)`` on a daemon thread called ``name``, started."""
    thread = threading.Thread(
        target=keep_running, args=(flow, stop, where, final), name=name, daemon=True
    )
    thread.start()
    return thread
