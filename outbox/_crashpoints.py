"""Named crash points: where a process may die, made reachable on purpose in tests.

Production code calls :func:`crash_point` at the instants that matter for the
guarantees (after the broker accepted a batch and before the rows are marked,
after a handler's commit and before the ack, during a compensation). It costs
one dictionary lookup. When the environment variable ``OUTBOXKIT_CRASH_AT``
names that point, the process kills itself with SIGKILL there — no cleanup, no
``finally`` blocks, exactly like a power cut — after ``OUTBOXKIT_CRASH_SKIP``
earlier passes (default 0). ``outboxkit.testing`` (and its ``outboxkit_crash`` pytest fixture) drives this.
"""

from __future__ import annotations

import os
import signal
from typing import Final

__all__ = ["CRASH_AT_ENV", "CRASH_POINTS", "CRASH_SKIP_ENV", "crash_point"]

CRASH_AT_ENV: Final = "OUTBOXKIT_CRASH_AT"
CRASH_SKIP_ENV: Final = "OUTBOXKIT_CRASH_SKIP"

CRASH_POINTS: Final = {
    "relay.after_claim": "rows claimed, nothing published yet",
    "relay.after_publish": "the broker accepted the batch; rows not marked yet",
    "relay.after_mark": "rows marked; transaction not committed yet",
    "inbox.after_handler": "handler ran; its transaction not committed yet",
    "inbox.after_commit": "handler's transaction committed; message not acknowledged yet",
    "saga.after_transition": "saga state updated and commands queued; not committed yet",
    "saga.during_compensation": "a compensation step is being issued",
}
"""Every named crash point and the instant it stands for."""

_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here with SIGKILL if ``OUTBOXKIT_CRASH_AT`` names this point (after the skips)."""
    target = os.environ.get(CRASH_AT_ENV)
    if target is None or target != name:
        return
    seen = _passes.get(name, 0)
    _passes[name] = seen + 1
    if seen >= int(os.environ.get(CRASH_SKIP_ENV, "0")):
        os.kill(os.getpid(), signal.SIGKILL)
