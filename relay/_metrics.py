"""Prometheus metrics of a relay (served by :class:`~relay.MetricsServer`).

Each :class:`RelayMetrics` has its own registry, so tests (and several relays
in one process) never collide in the global one. The gauges are read from the
tables (every few seconds), not counted in memory, so every relay of a table
reports the same backlog and a restart does not reset them; the alerting rules
(``outboxkit alerts``) aggregate them with ``max``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ._status import read_backlog, read_open_transactions

if TYPE_CHECKING:
    from ._store import OutboxStore

__all__ = ["HELD_REASONS", "RelayMetrics"]

_BACKLOG_EVERY_S = 5.0
# Why an unpublished row is not claimed now. Rows of a transaction still open
# are invisible, so they cannot be counted: their reason is reported as the
# open transactions themselves (outboxkit_relay_open_transactions). The relay
# keeps no high-water mark, so such a transaction holds back no committed row
# (see docs/adr/0013-monitoring-and-tracing.md).
HELD_REASONS = ("backoff", "parked_key", "delayed")
# Commit-to-broker latency: from a few milliseconds (NOTIFY wake-up) to minutes (outage).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class _Row(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def created_at(self) -> dt.datetime: ...


class RelayMetrics:
    """The relay's metrics (names start with ``outboxkit_relay_``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.published = Counter("outboxkit_relay_published", "Messages published.", ["topic"], registry=r)
        self.failures = Counter(
            "outboxkit_relay_failures", "Failed publish attempts by reason.", ["reason"], registry=r
        )
        self.dead_lettered = Counter("outboxkit_relay_dead_lettered", "Messages dead-lettered.", registry=r)
        self.batch_seconds = Histogram(
            "outboxkit_relay_batch_duration_seconds",
            "Publish-and-mark latency of one batch.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.backlog = Gauge("outboxkit_relay_backlog_rows", "Unpublished rows.", registry=r)
        self.oldest_age = Gauge(
            "outboxkit_relay_oldest_age_seconds", "Age of the oldest unpublished row.", registry=r
        )
        self.behind_parked = Gauge(
            "outboxkit_relay_rows_behind_parked_key",
            "Rows waiting because an earlier row of their key is in retry backoff.",
            registry=r,
        )
        self.delayed = Gauge("outboxkit_relay_delayed_rows", "Rows not yet available (delayed).", registry=r)
        self.owned_partitions = Gauge(
            "outboxkit_relay_owned_partitions", "Relay partitions leased by this relay.", registry=r
        )
        self.held = Gauge(
            "outboxkit_relay_held_rows",
            "Unpublished rows not claimable now, by reason (backoff, parked_key, delayed).",
            ["reason"],
            registry=r,
        )
        self.oldest_due_age = Gauge(
            "outboxkit_relay_oldest_due_age_seconds",
            "How long the longest-waiting claimable row has been due (0 when none is).",
            registry=r,
        )
        self.dead_letter_rows = Gauge(
            "outboxkit_relay_dead_letter_rows",
            "Dead letters in the outbox's dead-letter table not retried yet, by topic.",
            ["topic"],
            registry=r,
        )
        self.publish_latency = Histogram(
            "outboxkit_relay_publish_latency_seconds",
            "Time from a row's insert (its transaction) to its publish.",
            ["topic"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.open_transactions = Gauge(
            "outboxkit_relay_open_transactions",
            "Transactions open over 5 s in the outbox's database (PostgreSQL): the rows they wrote are"
            " held back until they commit.",
            registry=r,
        )
        self.oldest_open_transaction = Gauge(
            "outboxkit_relay_oldest_open_transaction_seconds",
            "Age of the oldest of those transactions (0 when none).",
            registry=r,
        )
        self._backlog_at = 0.0
        self._dead_letter_topics: set[str] = set()

    def record_batch(self, published: Sequence[_Row], rejected: int, dead: int, seconds: float) -> None:
        """Count one batch."""
        by_topic: dict[str, int] = {}
        for row in published:
            by_topic[row.topic] = by_topic.get(row.topic, 0) + 1
        for topic, count in by_topic.items():
            self.published.labels(topic=topic).inc(count)
        now = dt.datetime.now(dt.UTC)
        for row in published:
            created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=dt.UTC)
            self.publish_latency.labels(topic=row.topic).observe(max((now - created).total_seconds(), 0.0))
        if rejected:
            self.failures.labels(reason="rejected").inc(rejected)
        if dead:
            self.dead_lettered.inc(dead)
        self.batch_seconds.observe(seconds)

    def refresh_backlog(self, engine: Engine, store: OutboxStore, *, now: dt.datetime) -> None:
        """Re-read the backlog gauges (at most every few seconds: it counts rows)."""
        if time.monotonic() < self._backlog_at:
            return
        self._backlog_at = time.monotonic() + _BACKLOG_EVERY_S
        try:
            with engine.connect() as conn:
                backlog = read_backlog(conn, store.tables, now=now, detail=False)
                open_tx = read_open_transactions(conn)
        except SQLAlchemyError:
            return  # the loop reports database trouble itself
        self.backlog.set(backlog.pending)
        self.oldest_age.set(backlog.oldest_age_s or 0.0)
        self.behind_parked.set(backlog.behind_parked_key)
        self.delayed.set(backlog.delayed)
        self.held.labels(reason="backoff").set(backlog.in_backoff)
        self.held.labels(reason="parked_key").set(backlog.behind_parked_key)
        self.held.labels(reason="delayed").set(backlog.delayed)
        self.oldest_due_age.set(backlog.oldest_due_age_s or 0.0)
        if open_tx is not None:
            self.open_transactions.set(open_tx[0])
            self.oldest_open_transaction.set(open_tx[1])
        # A topic whose dead letters were all retried or purged drops to 0, not to stale.
        topics = self._dead_letter_topics | set(backlog.dead_letters_by_topic)
        for topic in topics:
            self.dead_letter_rows.labels(topic=topic).set(backlog.dead_letters_by_topic.get(topic, 0))
        self._dead_letter_topics = topics
