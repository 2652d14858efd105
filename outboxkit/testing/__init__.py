"""Test support for applications built on outboxkit: the crash-point harness and the pytest plugin.

:func:`crash_matrix` / :class:`CrashHarness` run your process with
``OUTBOXKIT_CRASH_AT`` set so it kills itself at a named instant, then again
without the crash; :mod:`outboxkit.testing.pytest_plugin` (a ``pytest11``
entry point) gives the ``outboxkit_crash`` fixture. See docs/testing.md.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._crash_harness import CRASH_POINTS, CrashHarness, CrashRun, crash_matrix, run_process

__all__ = ["CRASH_POINTS", "CrashHarness", "CrashRun", "crash_matrix", "run_process"]
