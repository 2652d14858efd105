"""Prometheus metrics and the ``/metrics`` + ``/healthz`` HTTP endpoint of a relay.

Each :class:`RelayMetrics` has its own registry, so tests (and several relays
in one process) never collide in the global one.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from outbox import ConfigError

from ._status import read_backlog

if TYPE_CHECKING:
    from ._store import OutboxStore

__all__ = ["MetricsServer", "RelayMetrics"]

_BACKLOG_EVERY_S = 5.0


class _Row(Protocol):
    @property
    def topic(self) -> str: ...


class RelayMetrics:
    """The relay's metrics (names start with ``outboxkit_relay_``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.published = Counter("outboxkit_relay_published", "Messages published.", ["topic"], registry=r)
        self.failures = Counter(
            "outboxkit_relay_failures", "Failed publish attempts by reason.", ["reason"], registry=r
        )
        self.dead_lettered = Counter("outboxkit_relay_dead_lettered", "Messages dead-lettered.", registry=r)
        self.batch_seconds = Histogram(
            "outboxkit_relay_batch_duration_seconds",
            "Publish-and-mark latency of one batch.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.backlog = Gauge("outboxkit_relay_backlog_rows", "Unpublished rows.", registry=r)
        self.oldest_age = Gauge(
            "outboxkit_relay_oldest_age_seconds", "Age of the oldest unpublished row.", registry=r
        )
        self.behind_parked = Gauge(
            "outboxkit_relay_rows_behind_parked_key",
            "Rows waiting because an earlier row of their key is in retry backoff.",
            registry=r,
        )
        self.delayed = Gauge("outboxkit_relay_delayed_rows", "Rows not yet available (delayed).", registry=r)
        self.owned_partitions = Gauge(
            "outboxkit_relay_owned_partitions", "Relay partitions leased by this relay.", registry=r
        )
        self._backlog_at = 0.0

    def record_batch(self, published: Sequence[_Row], rejected: int, dead: int, seconds: float) -> None:
        """Count one batch."""
        by_topic: dict[str, int] = {}
        for row in published:
            by_topic[row.topic] = by_topic.get(row.topic, 0) + 1
        for topic, count in by_topic.items():
            self.published.labels(topic=topic).inc(count)
        if rejected:
            self.failures.labels(reason="rejected").inc(rejected)
        if dead:
            self.dead_lettered.inc(dead)
        self.batch_seconds.observe(seconds)

    def refresh_backlog(self, engine: Engine, store: OutboxStore, *, now: dt.datetime) -> None:
        """Re-read the backlog gauges (at most every few seconds: it counts rows)."""
        if time.monotonic() < self._backlog_at:
            return
        self._backlog_at = time.monotonic() + _BACKLOG_EVERY_S
        try:
            with engine.connect() as conn:
                backlog = read_backlog(conn, store.tables, now=now, detail=False)
        except SQLAlchemyError:
            return  # the loop reports database trouble itself
        self.backlog.set(backlog.pending)
        self.oldest_age.set(backlog.oldest_age_s or 0.0)
        self.behind_parked.set(backlog.behind_parked_key)
        self.delayed.set(backlog.delayed)


class MetricsServer:
    """Serve ``/metrics`` and ``/healthz`` (200 while ``healthy()`` holds, else 503) in a thread."""

    def __init__(self, metrics: RelayMetrics, healthy: Callable[[], bool], *, host: str, port: int) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif self.path.startswith("/healthz"):
                    ok = healthy()
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n", "text/plain")
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                del format, args  # scrapes are not worth a log line

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:  # port taken, address not local: a setting to fix, not a crash (#9)
            msg = f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            raise ConfigError(msg) from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="outboxkit-metrics", daemon=True
        )

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
