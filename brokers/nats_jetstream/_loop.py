"""A private asyncio event loop in a daemon thread, for the synchronous publish half.

nats-py is asyncio only and the relay is threads (docs/adr/0008-sync-and-async.md).
``asyncio.run`` per batch would open a connection per batch and drop it in
between, so nobody would answer the server's PINGs or follow a reconnect; one
long-lived loop keeps one connection alive for the publisher's whole life, and
each batch is a coroutine submitted to it with a bounded wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import TYPE_CHECKING, TypeVar

from outbox.errors import BrokerError

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """Run coroutines on one event loop owned by a daemon thread."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float) -> T:
        """Run ``coro`` on the loop and return its result; cancel it after ``timeout`` seconds."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            msg = f"NATS did not answer within {timeout:g}s"
            raise BrokerError(msg) from None

    def stop(self) -> None:
        """Stop the loop and wait for its thread."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
