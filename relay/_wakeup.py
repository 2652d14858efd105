"""Wake-ups: PostgreSQL LISTEN/NOTIFY with polling as the fallback, polling elsewhere.

:class:`Waker` sleeps until a notification, the poll interval, or
:meth:`Waker.interrupt` (called by ``stop()``, also from a signal handler: it
only writes a byte to a pipe). A lost listener connection falls back to
polling and reconnects on the next wait; notifications missed meanwhile do not
matter because every wake-up claims whatever is due.
"""

from __future__ import annotations

import contextlib
import os
import select
import time

import psycopg
import structlog
from sqlalchemy import Engine

__all__ = ["Waker", "channel_name"]

log = structlog.get_logger(__name__)


def channel_name(table: str) -> str:
    """The NOTIFY channel of an outbox table (see migration 0003_relay)."""
    return f"outboxkit_{table}"


class Waker:
    """Wait for work: LISTEN on PostgreSQL (``listen=True``), else poll."""

    def __init__(self, engine: Engine, *, table: str, listen: bool) -> None:
        self._engine = engine
        self._channel = channel_name(table)
        self._listen = listen and engine.dialect.name == "postgresql"
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._retry_at = 0.0
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    @property
    def listening(self) -> bool:
        """A LISTEN connection is open."""
        return self._conn is not None

    def interrupt(self) -> None:
        """End the current or next wait at once (async-signal-safe)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_fd, b"x")

    def connect(self) -> bool:
        """Open the LISTEN connection if needed; return whether one is open."""
        if not self._listen or self._conn is not None:
            return self._conn is not None
        if time.monotonic() < self._retry_at:
            return False
        url = self._engine.url.set(drivername="postgresql")
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        try:
            conn = psycopg.connect(
                url.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
            )
            conn.execute(f'LISTEN "{self._channel}"')
        except psycopg.Error as exc:
            if conn is not None:
                # Connected but LISTEN failed (a restart in between, a revoked
                # grant): close it now rather than leave it to the GC, which
                # reports it as a ResourceWarning in whatever runs next.
                conn.close()
            self._retry_at = time.monotonic() + 2.0
            log.warning("relay.listen_failed", error=type(exc).__name__)
            return False
        self._conn = conn
        return True

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; return True if woken by a notification."""
        self.connect()
        fds: list[int] = [self._read_fd]
        if self._conn is not None:
            fds.append(self._conn.fileno())
        try:
            ready, _, _ = select.select(fds, [], [], max(timeout, 0.0))
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for safety
            ready = []
        if self._read_fd in ready:
            self._drain_pipe()
        if self._conn is not None and self._conn.fileno() in ready:
            return self._drain_notifies()
        return False

    def _drain_pipe(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._read_fd, 512):
                pass

    def _drain_notifies(self) -> bool:
        assert self._conn is not None  # noqa: S101 - checked by the caller
        try:
            got = sum(1 for _ in self._conn.notifies(timeout=0.0))
        except psycopg.Error as exc:
            log.warning("relay.listen_lost", error=type(exc).__name__)
            self._close_conn()
            return True  # claim now: anything may have been missed
        return got > 0

    def _close_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the listener and the pipe."""
        self._close_conn()
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
