"""The one backoff: exponential, capped, with or without jitter, computed by tenacity.

Three formulas used to live in the relay (equal jitter), the consumer
(doubling, no jitter) and sagas (a multiplier, no jitter). They now share
:class:`RetryWait`, whose delays come from tenacity's wait strategies
(``wait_exponential``, ``wait_random_exponential``): tenacity is a dependency
already, and its strategies handle the overflow of large attempt numbers.
The toolkit's loops (outage counters, ``--once`` give-up, waits a stop event
interrupts, delays stored as ``next_attempt_at`` or saga timers) are not
plain "call this until it works" retries, so only the wait strategies are
used, not ``tenacity.Retrying`` itself.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import tenacity
from tenacity.wait import wait_base

__all__ = ["FailureBackoff", "RetryWait"]

# A RetryCallState needs a retrying object; the wait strategies read only the attempt number.
_RETRYING = tenacity.Retrying()


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryWait:
    """Wait ``base * multiplier ** (attempt - 1)``, at most ``cap``, before the try after ``attempt``.

    With ``jitter`` ("equal jitter"), half of that nominal delay is fixed and
    the other half a uniform random share, so many relays retrying at once
    spread out but none comes back sooner than half the nominal delay.
    Without it the delay is exactly the nominal one (a saga's timers, the
    consumer's in-process retries).

    .. versionadded:: 0.1
    """

    base: dt.timedelta
    cap: dt.timedelta
    multiplier: float = 2.0
    jitter: bool = True
    _strategy: wait_base = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        base, cap = self.base.total_seconds(), self.cap.total_seconds()
        strategy: wait_base
        if self.jitter:
            half = {"multiplier": base / 2, "max": cap / 2, "exp_base": self.multiplier}
            strategy = tenacity.wait_exponential(**half) + tenacity.wait_random_exponential(**half)
        else:
            strategy = tenacity.wait_exponential(multiplier=base, max=cap, exp_base=self.multiplier)
        object.__setattr__(self, "_strategy", strategy)

    def delay(self, attempt: int) -> dt.timedelta:
        """The wait after failed try number ``attempt`` (1-based; below 1 counts as 1)."""
        state = tenacity.RetryCallState(retry_object=_RETRYING, fn=None, args=(), kwargs={})
        state.attempt_number = max(attempt, 1)
        return min(dt.timedelta(seconds=self._strategy(state)), self.cap)


@dataclass(slots=True)
class FailureBackoff:
    """Counts consecutive failures (an outage) and gives the next wait; :meth:`reset` after a success."""

    wait: RetryWait = field(
        default_factory=lambda: RetryWait(base=dt.timedelta(milliseconds=200), cap=dt.timedelta(seconds=30))
    )
    failures: int = 0

    def next_delay(self) -> float:
        """Count a failure and return how long to wait (seconds)."""
        self.failures += 1
        return self.wait.delay(self.failures).total_seconds()

    def reset(self) -> None:
        """Forget past failures."""
        self.failures = 0
