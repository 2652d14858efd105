"""structlog configuration: the CLI is the only place that configures logging.

Console rendering on a terminal, JSON lines (with structured tracebacks)
otherwise; ISO UTC timestamps; context variables merged into every event.

Tracebacks never show frame locals (issue #9): structlog's ``dict_tracebacks``
and the console renderer's rich/better-exceptions formatters print every
frame's variables, so a handler's card number or a password URL held in a
local would land in the log. Frames keep file, line and function; exception
text is kept with passwords in URLs masked.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer

from outbox import ConfigError

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_FORMATS = ("auto", "json", "console")
# scheme://user:password@ -> scheme://user:***@ (also inside exception text).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")


def redact_text(text: str) -> str:
    """Mask the password of every URL in ``text``."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def _redact_values(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Mask URL passwords in every string value (``error=`` fields quote exception text)."""
    del logger, method
    for name, value in event.items():
        if isinstance(value, str) and "://" in value:
            event[name] = redact_text(value)
    return event


_TRANSFORMER = ExceptionDictTransformer(show_locals=False, use_rich=False)


def _json_exception(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Render ``exc_info`` as a list of exceptions with frames (file, line, function), no locals."""
    del logger, method
    exc_info = event.pop("exc_info", None)
    if not exc_info:
        return event
    info = structlog.processors._figure_out_exc_info(exc_info)  # noqa: SLF001 - the one normaliser
    if not info or info[0] is None:
        return event
    stack = _TRANSFORMER(info)
    for exc in stack:
        exc["exc_value"] = redact_text(str(exc.get("exc_value", "")))
        for frame in exc.get("frames", []):
            frame.pop("locals", None)
    event["exception"] = stack
    return event


def _console_exception(sio: TextIO, exc_info: structlog.typing.ExcInfo) -> None:
    """Write a plain traceback (no locals) with URL passwords masked."""
    sio.write("\n" + redact_text("".join(traceback.format_exception(*exc_info))).rstrip("\n"))


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
        _redact_values,
    ]
    renderer: list[structlog.typing.Processor] = (
        [_json_exception, structlog.processors.JSONRenderer()]
        if as_json
        else [
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), exception_formatter=_console_exception)
        ]
    )
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level.lower()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
