"""Exponential backoff with jitter, capped: for broker and database outages and rejected rows."""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass

__all__ = ["Backoff", "backoff_delay"]


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1).

    "Equal jitter": half of ``min(cap, base * 2**(attempt-1))`` plus a uniform
    random share of the other half, so retries of many relays spread out but
    never come back sooner than half the nominal delay.
    """
    nominal = min(cap, math.ldexp(base, min(max(attempt - 1, 0), 62)))
    draw = rng.random() if rng is not None else random.random()  # noqa: S311 - jitter, not crypto
    return nominal / 2 + draw * nominal / 2


@dataclass(slots=True)
class Backoff:
    """Consecutive-failure counter producing the next delay; :meth:`reset` after a success."""

    base: dt.timedelta = dt.timedelta(milliseconds=200)
    cap: dt.timedelta = dt.timedelta(seconds=30)
    failures: int = 0

    def next_delay(self) -> float:
        """Count a failure and return how long to wait (seconds)."""
        self.failures += 1
        return backoff_delay(self.failures, base=self.base.total_seconds(), cap=self.cap.total_seconds())

    def reset(self) -> None:
        """Forget past failures."""
        self.failures = 0
