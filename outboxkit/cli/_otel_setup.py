"""``--otel-setup package.module:function``: let the application configure OpenTelemetry in a daemon.

``outboxkit relay`` and ``outboxkit consume`` are processes of their own: the
OpenTelemetry SDK (provider, sampler, exporter) is the application's choice,
so the daemon imports the named function and calls it once, before anything
runs (the same ``module:attribute`` form as ``consume``'s registry). Without
it the daemon records no span of its own, but still carries every message's
trace context through (docs/tracing.md). ``opentelemetry-instrument`` works
as well: it configures the SDK from ``OTEL_*`` variables before we start.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from outbox import ConfigError

__all__ = ["run_otel_setup"]


def run_otel_setup(target: str | None) -> None:
    """Import ``module:function`` and call it with no arguments."""
    if not target:
        return
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        msg = f"--otel-setup {target!r} must look like package.module:function"
        raise ConfigError(msg)
    cwd = str(Path.cwd())
    if cwd not in sys.path:  # as for the consumer registry: modules next to the user are importable
        sys.path.insert(0, cwd)
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        msg = f"--otel-setup: cannot load {target!r}: {exc}"
        raise ConfigError(msg) from exc
    if not callable(function):
        msg = f"--otel-setup: {target!r} is not callable"
        raise ConfigError(msg)
    function()
