"""The ``outboxkit`` command line: the only place that composes the packages.

Every subcommand lives in its own module; ``main`` turns any
:class:`~outbox.errors.OutboxError` and any usage error into one line on
stderr and exit status 2 (tracebacks only with ``--debug``).
"""

from __future__ import annotations

from ._main import app, main

__all__ = ["app", "main"]
