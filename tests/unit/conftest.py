"""Fixtures of the unit tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest


@pytest.fixture
def fake_server() -> Iterator[tuple[int, list[bytes]]]:
    """A one-shot TCP server that replies with replies[0] to whatever it receives."""
    replies: list[bytes] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(replies[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1], replies
    srv.close()
