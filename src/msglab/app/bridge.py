"""Runs ``async def`` handlers on one event loop of the runtime's own, in a thread: a consumer's
thread hands its coroutine over and waits for it, so sync and async handlers look alike to the
middleware (``Handler``). A context's ``deadline`` cancels the coroutine (``HandlerTimeout``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from msglab.app.context import Context, Handler, HandlerTimeout


class EventLoopThread:
    """One asyncio loop in a daemon thread, started on first use; ``close`` stops it."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=loop.run_forever, name="msglab-app-loop", daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop

    def run(self, coro: Coroutine[Any, Any, Any], timeout_s: float | None) -> Any:
        """Run ``coro`` on the loop and wait for it; after ``timeout_s`` it is cancelled and
        HandlerTimeout raised."""

        async def bounded() -> Any:
            if timeout_s is None:
                return await coro
            return await asyncio.wait_for(coro, max(0.0, timeout_s))

        future = asyncio.run_coroutine_threadsafe(bounded(), self._running())
        try:
            return future.result()
        except TimeoutError as exc:
            if timeout_s is None:
                raise
            raise HandlerTimeout(f"cancelled after {timeout_s:.3g}s") from exc

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()


def as_handler(fn: Callable[..., Any], is_async: bool, loop: EventLoopThread) -> Handler:
    """The user's function as a ``Handler``: a coroutine function runs on ``loop``."""
    if not is_async:
        return fn

    def run_async(ctx: Context) -> None:
        loop.run(fn(ctx), ctx.remaining_s())

    return run_async
