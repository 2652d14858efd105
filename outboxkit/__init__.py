"""outboxkit, the program: the ``outboxkit`` command line and the only place that composes the packages.

The library lives in the stage packages (``outbox``, ``brokers``, ``relay``,
``inbox``, ``saga``; see docs/adr/0001-layering.md). This package wires them:
:mod:`outboxkit.cli` (the command), :mod:`outboxkit.demo` (``outboxkit demo``
and ``examples/order_saga``), :mod:`outboxkit.testing` (crash harness and
pytest plugin) and :mod:`outboxkit.soak` (``outboxkit soak``).

.. versionadded:: 0.1
"""

from __future__ import annotations

from outbox import __version__

__all__ = ["__version__"]
