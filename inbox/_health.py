"""Liveness and readiness of a consumer runner, answered by ``/healthz`` and ``/readyz``.

Alive: the lease loop went round (whatever its outcome) lately, so the event
loop is not wedged. Ready: the last lease round *succeeded* within one lease
TTL (the leases this process holds are current, and it takes its share of the
streams; a member with more peers than streams holds none and is still ready)
and the consumer's database answers. A consumer that cannot reach its broker
or its database stays alive (restarting it would not help) but is not ready.
"""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import Engine, literal, select
from sqlalchemy.exc import SQLAlchemyError

__all__ = ["ConsumerHealth"]

_ALIVE_WITHIN_S = 60.0  # the relay's threshold


class ConsumerHealth:
    """What ``/healthz`` and ``/readyz`` of a :class:`~inbox.ConsumerRunner` answer.

    .. versionadded:: 0.1
    """

    def __init__(self, engine: Engine, *, lease_ttl: dt.timedelta) -> None:
        self._engine = engine
        self._lease_ttl_s = lease_ttl.total_seconds()
        self._started = time.monotonic()
        self._last_round: float | None = None
        self._last_success: float | None = None

    def lease_round(self, *, ok: bool) -> None:
        """Record one round of the lease loop (called by the runner)."""
        now = time.monotonic()
        self._last_round = now
        if ok:
            self._last_success = now

    def healthy(self) -> bool:
        """The lease loop ran in the last minute (or the runner is still starting)."""
        last = self._last_round if self._last_round is not None else self._started
        return time.monotonic() - last < max(_ALIVE_WITHIN_S, 3 * self._lease_ttl_s)

    def ready(self) -> bool:
        """Leases renewed within one TTL, and the database reachable."""
        if self._last_success is None or time.monotonic() - self._last_success >= self._lease_ttl_s:
            return False
        try:
            with self._engine.connect() as conn:
                conn.execute(select(literal(1)))
        except SQLAlchemyError:
            return False
        return True
