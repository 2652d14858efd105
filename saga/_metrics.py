"""Prometheus metrics of sagas: how many are in each state, how many are stuck, how long they take.

The counts come from the saga table at scrape time (:class:`SagaGauges`), so
they are the same whichever orchestrator process is scraped and survive
restarts. Durations are observed in the process whose transaction finishes a
saga, after the commit (a transaction that rolls back observes nothing).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import structlog
from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ._model import SagaInstance, SagaState
from ._store import as_utc
from .tables import saga_instance, saga_timer

__all__ = ["DEFAULT_STUCK_AFTER", "SAGA_SECONDS", "SagaGauges", "observe_finished"]

log = structlog.get_logger("saga")

# A saga that has not moved for this long is "stuck": its step timeouts (or its
# deadline) should have moved it long before. Overridable per collector.
DEFAULT_STUCK_AFTER = dt.timedelta(minutes=15)
_FINAL = (SagaState.COMPLETED.value, SagaState.COMPENSATED.value)
# A deadline timer is a delayed outbox message: relay and consumer need a moment to deliver it.
_GRACE = dt.timedelta(minutes=1)

SAGA_SECONDS = Histogram(
    "outboxkit_saga_duration_seconds",
    "Time from a saga's start to its end, by type and outcome (completed, compensated).",
    ["type", "outcome"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400),
)


def observe_finished(session: Session, before: SagaState, after: SagaInstance) -> None:
    """Observe the saga's duration once the transaction that ended it commits."""
    if before.final or not after.state.final:
        return
    seconds = max((as_utc(after.updated_at) - as_utc(after.created_at)).total_seconds(), 0.0)

    def committed(_: Session) -> None:
        SAGA_SECONDS.labels(type=after.type, outcome=after.state.value).observe(seconds)

    event.listen(session, "after_commit", committed, once=True)


class SagaGauges(Collector):
    """``outboxkit_saga_instances{type,state}``, ``outboxkit_saga_stuck{type}`` and the oldest open age.

    Register it in a Prometheus registry (``outboxkit consume`` does when the
    saga tables exist); each scrape runs one grouped query.

    .. versionadded:: 0.1
    """

    def __init__(self, engine: Engine, *, stuck_after: dt.timedelta = DEFAULT_STUCK_AFTER) -> None:
        self._engine = engine
        self._stuck_after = stuck_after

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families, without querying the database at registration."""
        yield from self._families()

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "outboxkit_saga_instances", "Sagas by type and state.", labels=["type", "state"]
            ),
            GaugeMetricFamily(
                "outboxkit_saga_stuck",
                "Sagas not final whose last transition is older than the stuck threshold.",
                labels=["type"],
            ),
            GaugeMetricFamily(
                "outboxkit_saga_oldest_open_age_seconds",
                "Age of the oldest saga that is not final, by type.",
                labels=["type"],
            ),
            GaugeMetricFamily(
                "outboxkit_saga_deadline_missed",
                "Sagas still running more than a minute past their overall deadline (its timer is not"
                " getting through).",
                labels=["type"],
            ),
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Count sagas (nothing when the database does not answer)."""
        instances, stuck, oldest, missed = self._families()
        now = dt.datetime.now(dt.UTC)
        s = saga_instance
        open_ = s.c.state.not_in(_FINAL)
        query = select(
            s.c.type,
            s.c.state,
            func.count(),
            func.count().filter(open_, s.c.updated_at < now - self._stuck_after),
            func.min(s.c.created_at).filter(open_),
        ).group_by(s.c.type, s.c.state)
        from ._transition import DEADLINE_TIMER  # noqa: PLC0415 - _transition imports this module

        t = saga_timer
        overdue = (
            select(s.c.type, func.count())
            .join(t, t.c.saga_id == s.c.id)
            .where(
                t.c.name == DEADLINE_TIMER, s.c.state == SagaState.RUNNING.value, t.c.fires_at < now - _GRACE
            )
            .group_by(s.c.type)
        )
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
                overdue_by = {saga_type: int(n) for saga_type, n in conn.execute(overdue)}
        except SQLAlchemyError as exc:
            log.debug("saga.gauge_unavailable", error=type(exc).__name__)
            return
        stuck_by: dict[str, int] = {}
        oldest_by: dict[str, float] = {}
        for saga_type, state, count, stuck_count, first in rows:
            instances.add_metric([saga_type, state], int(count))
            stuck_by[saga_type] = stuck_by.get(saga_type, 0) + int(stuck_count)
            if first is not None:
                age = max((now - as_utc(first)).total_seconds(), 0.0)
                oldest_by[saga_type] = max(oldest_by.get(saga_type, 0.0), age)
        for saga_type, count in sorted(stuck_by.items()):
            stuck.add_metric([saga_type], count)
            oldest.add_metric([saga_type], oldest_by.get(saga_type, 0.0))
            missed.add_metric([saga_type], overdue_by.get(saga_type, 0))
        yield instances
        yield stuck
        yield oldest
        yield missed
