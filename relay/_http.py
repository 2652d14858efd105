"""The HTTP endpoint of a daemon: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (can do its work).

One server for the relay and the consumer (``outboxkit consume`` serves it
too), so both answer probes the same way. ``/healthz`` is for a liveness probe
(restart me when it fails), ``/readyz`` for a readiness probe and the
``OutboxkitDaemonNotReady`` alert (the process runs, but cannot reach its
database or holds no lease).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from outbox import ConfigError

from ._metrics import RelayMetrics

__all__ = ["MetricsServer"]

Probe = Callable[[], bool]


def _handler_class(registry: CollectorRegistry, healthy: Probe, ready: Probe) -> type[BaseHTTPRequestHandler]:
    probes = {"/healthz": healthy, "/readyz": ready}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in probes:
                ok = _safe(probes[path])
                self._reply(200 if ok else 503, b"ok\n" if ok else b"unavailable\n", "text/plain")
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

    return Handler


class _Readiness(Collector):
    """``outboxkit_daemon_ready{daemon}``: the readiness probe as a gauge, so an alert can page on it.

    Prometheus scrapes ``/metrics``, not ``/readyz``; without this gauge a daemon
    that runs but cannot reach its database would only show in a Kubernetes probe.
    """

    def __init__(self, daemon: str, ready: Probe) -> None:
        self._daemon = daemon
        self._ready = ready

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "outboxkit_daemon_ready", "1 while /readyz answers 200, else 0.", labels=["daemon"]
        )
        family.add_metric([self._daemon], 1.0 if _safe(self._ready) else 0.0)
        yield family


def _safe(probe: Probe) -> bool:
    try:
        return probe()
    except Exception:  # noqa: BLE001 - a probe that raises means "not ok", never a 500 with a traceback
        return False


class MetricsServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` (200 while the probe holds, else 503) in a thread.

    Args:
        metrics: a relay's metrics, or any Prometheus registry (the consumer's is the default one).
        healthy: the liveness probe.
        host: the address to listen on (``127.0.0.1`` by default on the command line).
        port: the port; 0 picks a free one (see :attr:`port`).
        ready: the readiness probe; by default the liveness probe.
        daemon: the ``daemon`` label of ``outboxkit_daemon_ready`` (``relay``, ``consumer``).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        metrics: RelayMetrics | CollectorRegistry,
        healthy: Probe,
        *,
        host: str,
        port: int,
        ready: Probe | None = None,
        daemon: str = "relay",
    ) -> None:
        registry = metrics.registry if isinstance(metrics, RelayMetrics) else metrics
        ready = ready or healthy
        handler = _handler_class(registry, healthy, ready)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:  # port taken, address not local: a setting to fix, not a crash (#9)
            msg = f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            raise ConfigError(msg) from exc
        self._server.daemon_threads = True
        self._registry = registry
        self._readiness = _Readiness(daemon, ready)
        registry.register(self._readiness)
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
        self._registry.unregister(self._readiness)
