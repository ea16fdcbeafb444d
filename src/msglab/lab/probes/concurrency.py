"""Concurrency control on the real PostgreSQL (and Redis for the distributed lock): W threads
each add 1 to one shared counter N times, in their own transactions, READ COMMITTED.

* read-modify-write: SELECT n, then UPDATE n = <read + 1>: concurrent increments overwrite each
  other (lost updates = expected - final).
* atomic-increment: UPDATE n = n + 1 (the row lock serialises them).
* select-for-update: SELECT n FOR UPDATE, then UPDATE n = <read + 1>.
* optimistic-version: SELECT n, version; UPDATE ... WHERE version = <read>; 0 rows updated is a
  conflict, retried (conflicts are counted).
* redis-lock: the read-modify-write inside a Redis lock (SET NX PX, 2 s wait timeout).
* lock-order-opposite / -fixed: two kinds of transaction each update rows A and B with a 5 ms
  step between (the time of a business call); opposite orders deadlock (PostgreSQL detects it
  and aborts one after ``deadlock_timeout``, set to 100 ms here: counted and retried), a fixed
  order does not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from msglab.db import engine
from msglab.extras import driver_import
from msglab.infra import backend_for, service_url
from msglab.settings import Settings

with driver_import("postgres", __name__):
    from sqlalchemy import text
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.exc import OperationalError

WORKERS = 4
STEP_S = 0.005  # lock-order: the pause between the two updates of one transaction


def run(variant: str, settings: Settings, quick: bool) -> tuple[dict[str, Any], str]:
    services = ["postgres", "redis"] if variant == "redis-lock" else ["postgres"]
    backend_for(settings).up(services)
    db = engine(service_url(settings, "postgres"))
    per_worker = (10 if variant.startswith("lock-order") else 250) * (1 if quick else 4)
    name = f"probe-{variant}-{time.time_ns()}"
    with db.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS lab_counters "
                "(name text PRIMARY KEY, n bigint NOT NULL, version bigint NOT NULL)"
            )
        )
        for row in (name, f"{name}-b"):
            conn.execute(text("INSERT INTO lab_counters VALUES (:n, 0, 0)"), {"n": row})
    stats = _Stats()
    step = _STEPS[variant](db, name, stats, settings)
    began = time.monotonic()
    threads = [
        threading.Thread(target=_loop, args=(step, per_worker, i, stats)) for i in range(WORKERS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - began
    with db.begin() as conn:
        final = conn.execute(text("SELECT n FROM lab_counters WHERE name = :n"), {"n": name})
        value = int(final.scalar_one())
        conn.execute(text("DELETE FROM lab_counters WHERE name LIKE :n"), {"n": f"{name}%"})
    db.dispose()
    expected = WORKERS * per_worker
    figures = {
        "workers": WORKERS,
        "expected": expected,
        "final": value,
        "lost_updates": expected - value,
        "conflicts_retried": stats.conflicts,
        "deadlocks": stats.deadlocks,
        "lock_timeouts": stats.timeouts,
        "seconds": round(seconds, 3),
        "tx_per_s": round(expected / seconds, 1),
    }
    measured = (
        f"{figures['lost_updates']} of {expected} increments lost, "
        f"{stats.conflicts} conflicts retried, {stats.deadlocks} deadlocks, "
        f"{figures['tx_per_s']:.0f} tx/s"
    )
    return figures, measured


class _Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.conflicts = 0
        self.deadlocks = 0
        self.timeouts = 0

    def add(self, field: str) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + 1)


Step = Callable[[int], bool]  # one increment by worker i; False: retry it
StepFactory = Callable[[Engine, str, "_Stats", Settings], Step]


def _loop(step: Step, n: int, worker: int, stats: _Stats) -> None:
    done = 0
    while done < n:
        if step(worker):
            done += 1


def _read_then_write(suffix: str) -> StepFactory:
    """SELECT n (with ``suffix``: `` FOR UPDATE`` locks the row), then UPDATE n = read + 1."""

    def make(db: Engine, name: str, stats: _Stats, settings: Settings) -> Step:
        def step(worker: int) -> bool:
            with db.begin() as conn:
                n = _read(conn, name, suffix)
                conn.execute(
                    text("UPDATE lab_counters SET n = :v WHERE name = :n"), {"v": n + 1, "n": name}
                )
            return True

        return step

    return make


def _atomic(db: Engine, name: str, stats: _Stats, settings: Settings) -> Step:
    def step(worker: int) -> bool:
        with db.begin() as conn:
            conn.execute(text("UPDATE lab_counters SET n = n + 1 WHERE name = :n"), {"n": name})
        return True

    return step


def _optimistic(db: Engine, name: str, stats: _Stats, settings: Settings) -> Step:
    def step(worker: int) -> bool:
        with db.begin() as conn:
            row = conn.execute(
                text("SELECT n, version FROM lab_counters WHERE name = :n"), {"n": name}
            ).one()
            updated = conn.execute(
                text(
                    "UPDATE lab_counters SET n = :v, version = version + 1 "
                    "WHERE name = :n AND version = :ver"
                ),
                {"v": row.n + 1, "n": name, "ver": row.version},
            ).rowcount
        if not updated:
            stats.add("conflicts")
        return bool(updated)

    return step


def _redis_lock(db: Engine, name: str, stats: _Stats, settings: Settings) -> Step:
    from msglab.errors import MsglabError
    from msglab.resilience.redis_lock import RedisLock

    url = service_url(settings, "redis")
    locks = [RedisLock.from_url(url, name, ttl_s=5.0, wait_s=2.0) for _ in range(WORKERS)]
    rmw = _read_then_write("")(db, name, stats, settings)

    def step(worker: int) -> bool:
        try:
            with locks[worker]:
                return rmw(worker)
        except MsglabError:  # LockTimeout: not done, tried again
            stats.add("timeouts")
            return False

    return step


def _lock_order(opposite: bool) -> StepFactory:
    def make(db: Engine, name: str, stats: _Stats, settings: Settings) -> Step:
        def step(worker: int) -> bool:
            rows = (name, f"{name}-b")
            if opposite and worker % 2:
                rows = rows[::-1]
            try:
                with db.begin() as conn:
                    # detect a deadlock after 100 ms instead of PostgreSQL's default 1 s
                    conn.execute(text("SET LOCAL deadlock_timeout = '100ms'"))
                    for i, row in enumerate(rows):
                        conn.execute(
                            text("UPDATE lab_counters SET n = n + 1 WHERE name = :n"), {"n": row}
                        )
                        if i == 0:
                            time.sleep(STEP_S)
            except OperationalError as exc:
                if "deadlock" not in str(exc):
                    raise
                stats.add("deadlocks")
                return False
            return True

        return step

    return make


def _read(conn: Connection, name: str, suffix: str = "") -> int:
    query = text(f"SELECT n FROM lab_counters WHERE name = :n{suffix}")
    return int(conn.execute(query, {"n": name}).scalar_one())


_STEPS: dict[str, StepFactory] = {
    "read-modify-write": _read_then_write(""),
    "atomic-increment": _atomic,
    "select-for-update": _read_then_write(" FOR UPDATE"),
    "optimistic-version": _optimistic,
    "redis-lock": _redis_lock,
    "lock-order-opposite": _lock_order(True),
    "lock-order-fixed": _lock_order(False),
}
