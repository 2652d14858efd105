"""Whole-system fault soak: writers, relays and consumers under injected faults, then a checker.

``outboxkit soak --profile smoke|full --db postgresql+psycopg://... --broker redis://...``
runs it against your own servers (docs/reliability.md); the test suite runs the
smoke profile with server restarts too (tests/soak.py).

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._faults import ServerFaults
from ._profile import PROFILES, Profile
from ._run import Verdict, preflight, run, verdict_json

__all__ = ["PROFILES", "Profile", "ServerFaults", "Verdict", "preflight", "run", "verdict_json"]
