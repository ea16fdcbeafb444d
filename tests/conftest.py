"""Shared helpers for msglab's own tests (the server fixtures come from msglab.testing)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from msglab.db import engine
from msglab.outbox import Outbox


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``msglab ARGS`` as a user would, in a separate process."""
    result = subprocess.run(
        [sys.executable, "-m", "msglab", *args], capture_output=True, text=True, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"msglab {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def status_json(service: str) -> dict[str, Any]:
    (row,) = json.loads(run_cli("infra", "status", service, "--json").stdout)
    return dict(row)


@pytest.fixture
def cli() -> Any:
    return run_cli


@pytest.fixture(params=["postgresql", "sqlite"])
def any_db(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Engine]:
    """The PostgreSQL engine of ``db``, then a SQLite file's (WAL): for the patterns that run
    on both (the outbox, the relay, the idempotent consumer)."""
    if request.param == "sqlite":
        lite = engine(f"sqlite:///{tmp_path}/msglab.db")
        Outbox(lite).create_table()
        yield lite
        lite.dispose()
    else:
        yield request.getfixturevalue("db")


@pytest.fixture
def db(postgres_server: Any) -> Iterator[Engine]:
    """An SQLAlchemy engine (psycopg 3) on msglab's PostgreSQL, with the outbox table."""
    pg = engine(postgres_server.url)
    Outbox(pg).create_table()
    yield pg
    pg.dispose()
