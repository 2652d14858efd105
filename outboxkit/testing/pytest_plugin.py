"""The ``outboxkit`` pytest plugin: fixtures for crash-point tests of your own code.

Registered through the ``pytest11`` entry point, so installing outboxkit makes
``outboxkit_crash`` available in any test suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ._crash_harness import CrashHarness


@pytest.fixture
def outboxkit_crash(tmp_path: Path) -> CrashHarness:
    """A :class:`~outboxkit.testing.CrashHarness` running commands in the test's temporary directory."""
    return CrashHarness(cwd=tmp_path)
