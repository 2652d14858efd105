"""structlog configuration: the CLI is the only place that configures logging.

Console rendering on a terminal, JSON lines (with structured tracebacks)
otherwise; ISO UTC timestamps; context variables merged into every event.
"""

from __future__ import annotations

import logging
import sys

import structlog

from outbox import ConfigError

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_FORMATS = ("auto", "json", "console")


def configure_logging(*, level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog for a daemon or command writing to stderr."""
    if level.lower() not in _LEVELS:
        msg = f"--log-level must be one of {', '.join(_LEVELS)}, got {level!r}"
        raise ConfigError(msg)
    if fmt not in _FORMATS:
        msg = f"--log-format must be one of {', '.join(_FORMATS)}, got {fmt!r}"
        raise ConfigError(msg)
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[structlog.typing.Processor] = (
        [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
        if as_json
        else [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    )
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level.lower()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
