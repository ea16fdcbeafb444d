"""The lazy filesystem's control channel: one JSON line in, one JSON line out, on a unix socket.

Commands: ``ping``; ``unsynced`` (what a cut would drop now); ``sync`` (write every dirty
file to the backing folder, as ``sync(1)``); ``cut`` (drop what is unsynced and refuse every
operation from then on: the power is off). The socket is the mount owner's alone (0600).
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[str], dict[str, Any]]


def request(path: Path, command: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Send ``command``, return the answer; OSError when nobody answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        sock.sendall(json.dumps({"command": command}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"lazyfs control {path}: connection closed")
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    if "error" in answer:
        raise OSError(f"lazyfs {command}: {answer['error']}")
    return answer


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    handler: Handler


class _Request(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        try:
            answer = self.server.handler(json.loads(line)["command"])  # type: ignore[attr-defined]
        except Exception as exc:  # the answer says what failed; the filesystem goes on
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        self.wfile.write(json.dumps(answer).encode() + b"\n")


def serve(path: Path, handler: Handler) -> Callable[[], None]:
    """Answer requests on ``path`` in a background thread; returns the function that stops it."""
    path.unlink(missing_ok=True)
    old = os.umask(0o077)
    try:
        server = _Server(str(path), _Request)
    finally:
        os.umask(old)
    server.handler = handler
    threading.Thread(target=server.serve_forever, name="lazyfs-control", daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        path.unlink(missing_ok=True)

    return stop
