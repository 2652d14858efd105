"""Serve the dashboard with uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable

import uvicorn

from outbox import ConfigError

from ._app import create_app
from ._config import DashboardConfig

__all__ = ["DEFAULT_PORT", "bind", "serve"]

DEFAULT_PORT = 8484


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one); a busy port is a :class:`ConfigError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    """The dashboard's address for a person to open."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(
    config: DashboardConfig,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``config``'s dashboard on ``host:port`` (loopback unless told otherwise) until stopped.

    ``on_ready`` gets the dashboard's URL once the socket listens, before the first request.

    .. versionadded:: 0.1
    """
    app = create_app(config)  # checks the database before anything listens
    sock = bind(host, port)
    # No access log: it would print every URL, and a filter value may be a customer's key.
    server = uvicorn.Server(
        uvicorn.Config(app, access_log=False, log_level="warning", server_header=False, lifespan="on")
    )

    # uvicorn handles SIGINT/SIGTERM while it runs (graceful stop), then re-raises the signal
    # to the handlers it found: ours just ask it to stop, so a stopped dashboard exits 0.
    def stop(_signum: int, _frame: object) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if on_ready is not None:
            on_ready(url_of(sock))
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
