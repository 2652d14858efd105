"""A TCP fault proxy on loopback: one process's link to one server, with network faults on demand.

The soak puts one proxy between each relay or consumer and PostgreSQL, and
one between it and Redis, and points the process's URLs at the proxies. The
controller then cuts and slows links without touching the servers:

* :meth:`FaultProxy.slow` — added latency (and jitter) per forwarded chunk,
  both directions; order within a connection is kept;
* :meth:`FaultProxy.drop` — close every current connection at once (the
  process sees a reset; new connections work);
* :meth:`FaultProxy.half_open` — current connections stop forwarding but stay
  open, like a peer that vanished without a FIN (new connections work);
* :meth:`FaultProxy.partition` — current and new connections are accepted and
  black-holed: nothing is forwarded, nothing is closed, until :meth:`heal`;
* :meth:`FaultProxy.heal` — forward again; connections that were black-holed
  are closed (their TCP state would not have survived), so both ends see it.

asyncio streams in one background thread; every control method is safe to
call from any thread. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = ["FaultProxy", "proxied_url"]

_CHUNK = 65536
_T = TypeVar("_T")


@dataclass(eq=False)
class _Link:
    """One proxied connection: both stream pairs, and whether it is black-holed."""

    writers: tuple[asyncio.StreamWriter, asyncio.StreamWriter]
    frozen: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for writer in self.writers:
            with contextlib.suppress(Exception):
                writer.transport.abort()  # a reset, not a graceful FIN
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """Forward 127.0.0.1:<port> to ``upstream``; inject faults on demand (see the module docstring)."""

    def __init__(self, upstream_host: str, upstream_port: int, *, name: str = "proxy", seed: int = 0) -> None:
        self.name = name
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.latency = 0.0
        self.jitter = 0.0
        self.partitioned = False
        self.connections = 0  # accepted so far (for tests and the verdict)
        self._rng = random.Random(seed)  # noqa: S311 - jitter, not a secret
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"fault-proxy-{name}", daemon=True
        )

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Self:
        """Listen on a free loopback port (``self.port``) and start forwarding."""
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        """Close every connection and the listener; stop the thread."""
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- faults --------------------------------------------------------------

    def slow(self, latency: float, jitter: float = 0.0) -> None:
        """Delay every forwarded chunk by ``latency`` + uniform(0, ``jitter``) seconds (0, 0: full speed)."""
        self.latency, self.jitter = max(0.0, latency), max(0.0, jitter)

    def drop(self) -> int:
        """Reset every current connection; return how many."""
        return self._call(self._drop())

    def half_open(self) -> int:
        """Stop forwarding on every current connection without closing it; return how many."""
        return self._call(self._freeze())

    def partition(self) -> None:
        """Black-hole current and new connections until :meth:`heal`."""
        self.partitioned = True
        self._call(self._freeze())

    def heal(self) -> None:
        """End a partition and half-open links: black-holed connections are reset, new ones forward."""
        self.partitioned = False
        self._call(self._drop(frozen_only=True))

    # -- internals -----------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop()

    async def _drop(self, *, frozen_only: bool = False) -> int:
        links = [link for link in self._links if link.frozen or not frozen_only]
        for link in links:
            link.close()
            self._links.discard(link)
        return len(links)

    async def _freeze(self) -> int:
        for link in self._links:
            link.frozen = True
        return len(self._links)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.transport.abort()  # the server is down: the client sees a refused link
            return
        link = _Link((client_w, server_w), frozen=self.partitioned)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(client_r, server_w, link)),
            asyncio.create_task(self._pump(server_r, client_w, link)),
        ]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        try:
            while data := await reader.read(_CHUNK):
                if link.frozen:  # black-holed: hold the bytes, close nothing, until heal() resets it
                    await asyncio.get_running_loop().create_future()
                if self.latency or self.jitter:
                    await asyncio.sleep(self.latency + self._rng.uniform(0.0, self.jitter))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            if not link.frozen:  # one side ended: end the other, as TCP would
                link.close()
                self._links.discard(link)


def proxied_url(url: str, port: int) -> str:
    """``url`` with its host and port replaced by 127.0.0.1:``port`` (user, password, path kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))
