"""Gauges of a consumer read from its database at scrape time: dead letters by topic.

Read from the table rather than counted in memory so the figure survives a
restart, falls when an operator retries or purges, and agrees across the
processes of a group (the alert takes ``max``). Parked entries (behind a dead
letter of their key, ``on_dead_letter="park-key"``) are counted apart: they are
a consequence, not new failures.
"""

from __future__ import annotations

from collections.abc import Iterator

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from ._parking import PARKED_ERROR
from .tables import inbox_dead_letter

__all__ = ["DeadLetterGauges"]

log = structlog.get_logger("inbox")


class DeadLetterGauges(Collector):
    """``outboxkit_inbox_dead_letter_rows{consumer,topic}`` and ``outboxkit_inbox_parked_rows{consumer}``.

    Register it in a Prometheus registry; each scrape runs one grouped count.

    .. versionadded:: 0.1
    """

    def __init__(self, engine: Engine, *, consumer: str) -> None:
        self._engine = engine
        self._consumer = consumer

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families, without querying the database at registration."""
        yield from self._families()

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "outboxkit_inbox_dead_letter_rows",
                "Consumer dead letters not retried yet, by topic ('' when undecodable).",
                labels=["consumer", "topic"],
            ),
            GaugeMetricFamily(
                "outboxkit_inbox_parked_rows",
                "Entries parked behind a dead letter of their key, waiting for retry or purge.",
                labels=["consumer"],
            ),
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Count the consumer's dead letters (nothing when the database does not answer)."""
        dead, parked = self._families()
        d = inbox_dead_letter
        is_parked = d.c.error == PARKED_ERROR
        query = (
            select(d.c.topic, func.count().filter(~is_parked), func.count().filter(is_parked))
            .where(d.c.consumer == self._consumer, d.c.retried_at.is_(None))
            .group_by(d.c.topic)
        )
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
        except SQLAlchemyError as exc:
            # /readyz reports the outage; the gauge goes missing rather than lying.
            log.debug("inbox.dead_letter_gauge_unavailable", error=type(exc).__name__)
            return
        for topic, failed, _ in sorted(rows, key=lambda row: row[0] or ""):
            dead.add_metric([self._consumer, topic or ""], int(failed))
        parked.add_metric([self._consumer], sum(int(row[2]) for row in rows))
        yield dead
        yield parked
