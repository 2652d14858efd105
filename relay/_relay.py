"""The relay daemon: claim -> publish -> mark, per batch, until stopped.

One loop, one thread, blocking I/O: a batch is claimed (oldest due rows of the
partitions this relay leases), published in one broker round trip with the
partitions' fences, then deleted (or stamped ``published_at`` while the
replay window keeps them) in one transaction. A crash anywhere between claim
and commit leaves the rows pending: the worst case is a duplicate, never a loss.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from brokers import Outcome, OutgoingEntry, Publisher, PublishResult, connect_publisher
from outbox import BrokerAuthError, BrokerError, FencedError, encode_entry, use_schema
from outbox._crashpoints import crash_point
from outbox.tables import outbox_tables

from ._backoff import Backoff, backoff_delay
from ._config import RelayConfig
from ._db import check_schema, make_engine, storage_error
from ._incarnation import IncarnationTracker
from ._leases import LeaseManager
from ._metrics import RelayMetrics
from ._store import ClaimedRow, Failure, OutboxStore
from ._wakeup import Waker

__all__ = ["Relay", "RelayStats"]

log = structlog.get_logger(__name__)

_HOUSEKEEPING_SHARE = 3  # renew leases ttl/3 apart
_RETENTION_ROUNDS = 4
_BUSY_AT = 8  # rows in one claim that mean "busy": see _relay_batch
_ONCE_MAX_FAILURES = 5  # --once gives up after this many consecutive outages (~3 s of backoff)


@dataclass(slots=True)
class RelayStats:
    """Counters of one relay run."""

    published: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    batches: int = 0
    replayed: int = 0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Relay:
    """Forward committed outbox rows to a broker, at least once, in per-key order.

    Args:
        config: what to relay where.
        publisher: a broker publisher; by default one for ``config.broker_url``.
        engine: a SQLAlchemy engine; by default one for ``config.database_url``.
        metrics: Prometheus metrics to update, if any.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        config: RelayConfig,
        *,
        publisher: Publisher | None = None,
        engine: Engine | None = None,
        metrics: RelayMetrics | None = None,
    ) -> None:
        self.config = config
        self.relay_id = config.relay_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.engine = use_schema(engine or make_engine(config.database_url), config.outbox.schema)
        self.publisher = publisher or connect_publisher(
            config.broker_url,
            key_prefix=config.layout.prefix,
            max_len=config.max_len,
            schema=config.outbox.schema,
        )
        self.tables = outbox_tables(config.outbox)
        self.scope = self.tables.outbox.fullname
        self.store = OutboxStore(
            self.tables, partitions=config.partitions, park_dead_letters=config.on_dead_letter == "park-key"
        )
        self.leases = LeaseManager(
            self.engine,
            scope=self.scope,
            relay_id=self.relay_id,
            partitions=config.partitions,
            ttl=config.lease_ttl,
        )
        self.waker = Waker(self.engine, table=self.tables.outbox.name, listen=config.listen)
        self.metrics = metrics
        self.stats = RelayStats()
        self.last_progress = time.monotonic()
        self._stopping = threading.Event()
        self._log = log.bind(relay_id=self.relay_id)
        self._broker_backoff = Backoff()
        self._db_backoff = Backoff()
        self._next_housekeeping = 0.0
        self._fences_pending = False
        self._limit = min(config.batch_size, 64)  # slow start: grows while batches stay small
        self.incarnation = IncarnationTracker(
            self.engine,
            self.store,
            # Per outbox table: each table's relays replay their own rows when the broker loses data.
            name=f"broker_incarnation:{self.scope}:{self.publisher.description}|{config.layout.prefix}",
            replay_window=config.replay_window,
            log=self._log.bind(broker=self.publisher.description),
        )
        self._notify = config.listen and self.engine.dialect.name == "postgresql"

    # -- lifecycle -----------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop after the batch in hand (safe from a signal handler)."""
        self._stopping.set()
        self.waker.interrupt()

    def healthy(self, max_age_s: float) -> bool:
        """The loop made progress (a batch, an idle check or a lease renewal) in the last ``max_age_s``."""
        return time.monotonic() - self.last_progress < max_age_s

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping.is_set()

    def close(self) -> None:
        """Release the listener, the broker connection and the database pool (``run`` does it on exit)."""
        self.waker.close()
        self.publisher.close()
        self.engine.dispose()

    def run(self) -> RelayStats:
        """Relay until :meth:`stop` (or, with ``once``, until nothing is due); return the counters."""
        check_schema(self.engine, self.tables)
        try:
            partitions = self.leases.ensure_partitions()
        except SQLAlchemyError as exc:
            raise storage_error(exc, self.engine) from None
        self.store.partitions = partitions
        if partitions != self.config.partitions:
            self._log.warning(
                "relay.partitions_fixed",
                partitions=partitions,
                requested=self.config.partitions,
                reason="the first relay fixed the partition count; all relays must agree",
            )
        self._log.info(
            "relay.started",
            db=str(self.engine.url.render_as_string(hide_password=True)),
            broker=self.publisher.description,
            partitions=partitions,
            batch_size=self.config.batch_size,
        )
        started = time.monotonic()
        try:
            while not self.stopping:
                self._tick()
        finally:
            self._shutdown(started)
        return self.stats

    def _shutdown(self, started: float) -> None:
        try:
            self.leases.leave()
        except SQLAlchemyError as exc:
            self._log.warning("relay.leave_failed", error=str(storage_error(exc, self.engine)))
        self.close()
        self._log.info(
            "relay.stopped",
            published=self.stats.published,
            dead_lettered=self.stats.dead_lettered,
            batches=self.stats.batches,
            duration_ms=round((time.monotonic() - started) * 1000),
        )

    # -- the loop ------------------------------------------------------------

    def _tick(self) -> None:
        try:
            if time.monotonic() >= self._next_housekeeping or not self.leases.view.valid():
                self._housekeeping()
            owned = sorted(self.leases.view.epochs)
            relayed = self._claim_and_relay(owned) if owned and self.leases.view.valid() else 0
            if not relayed:
                self._idle()
            elif relayed < self._limit and self._notified_when_idle():
                # Drained as of the claim, and writers NOTIFY us at commit while we
                # are marked idle: wait for that instead of claiming an empty batch.
                self._wait_for_work()
            self._db_backoff.reset()
        except FencedError as exc:
            self._log.warning("relay.fenced", error=str(exc))
            self._count_failure("fenced")
            self.leases.view.valid_until = 0.0  # renew before anything else
        except BrokerAuthError:
            raise  # wrong credentials or ACL: a configuration error, never retried
        except BrokerError as exc:
            delay = self._broker_backoff.next_delay()
            self._log.warning("relay.publish_failed", error=str(exc), delay_s=round(delay, 3))
            self._count_failure("broker")
            self._give_up_once(exc, self._broker_backoff.failures)
            self._sleep(delay)
        except SQLAlchemyError as exc:
            delay = self._db_backoff.next_delay()
            error = storage_error(exc, self.engine)
            self._log.warning("relay.database_unavailable", error=str(error), delay_s=round(delay, 3))
            self._count_failure("database")
            self._give_up_once(error, self._db_backoff.failures)
            self._sleep(delay)

    def _give_up_once(self, error: Exception, failures: int) -> None:
        """With ``--once`` (cron, scripts) an outage outlasting a few retries ends the run with its error."""
        if self.config.once and failures >= _ONCE_MAX_FAILURES:
            raise error

    def _claim_and_relay(self, owned: Sequence[int]) -> int:
        """Claim, publish and mark one batch on one connection; return its size (0: nothing due)."""
        with self.engine.connect() as conn:
            batch = self.store.claim_batch(conn, owned=owned, limit=self._limit, now=_now())
            if not batch:
                conn.rollback()
                return 0
            self._adapt_limit(batch)
            crash_point("relay.after_claim")
            if conn.dialect.name == "sqlite":
                # End the read transaction before publishing: the SQL-table broker
                # may live in this same file and needs its write lock.
                conn.commit()
            self._relay_batch(batch, owned, conn=conn)
        return len(batch)

    def _adapt_limit(self, batch: list[ClaimedRow]) -> None:
        """Keep a batch's payload bytes near ``max_batch_bytes``: memory stays bounded with large rows."""
        size = sum(len(r.payload) + len(r.headers) for r in batch)
        budget = self.config.max_batch_bytes
        if size > budget:
            self._limit = max(1, len(batch) * budget // size)
        elif len(batch) == self._limit < self.config.batch_size and size * 2 <= budget:
            self._limit = min(self.config.batch_size, self._limit * 2)

    def _notified_when_idle(self) -> bool:
        return self._notify and self.leases.idle and self.waker.listening and not self.config.once

    def store_claim(self, owned: Sequence[int]) -> list[ClaimedRow]:
        """Claim the next batch of the ``owned`` partitions."""
        with self.engine.connect() as conn:
            rows = self.store.claim_batch(conn, owned=owned, limit=self.config.batch_size, now=_now())
            conn.rollback()
        return rows

    def _housekeeping(self) -> None:
        now = _now()
        view = self.leases.refresh(now=now)
        self._next_housekeeping = (
            time.monotonic() + self.config.lease_ttl.total_seconds() / _HOUSEKEEPING_SHARE
        )
        if view.gained or view.lost:
            self._log.info("relay.rebalanced", owned=sorted(view.epochs), gained=view.gained, lost=view.lost,
                           members=view.members)  # fmt: skip
        if view.gained or self._fences_pending:
            # Advance the fences now, so a paused former owner is refused even
            # if there is nothing to publish yet.
            self._fences_pending = True
            fences = self.leases.fences(sorted(view.epochs))
            result = self.publisher.publish([], fences=fences, incarnation=self.incarnation.expected())
            if not self._incarnation_changed(result):
                self._fences_pending = False
        if self.config.replay_window > dt.timedelta(0):
            self._retain(now)
        if self.metrics is not None:
            self.metrics.owned_partitions.set(len(view.epochs))
            self.metrics.refresh_backlog(self.engine, self.store, now=now)
        self.last_progress = time.monotonic()

    def _retain(self, now: dt.datetime) -> None:
        # Not `now - window`: while the broker is away nothing is confirmed, and
        # rows it acknowledged just before it went must survive for the replay (#9).
        with self.engine.connect() as conn:
            cutoff = self.incarnation.horizon(conn, now=now)
        for _ in range(_RETENTION_ROUNDS):
            with self.engine.begin() as conn:
                deleted = self.store.delete_expired(conn, older_than=cutoff)
            if deleted < 5000:  # noqa: PLR2004 - the store's batch size
                break

    def _idle(self) -> None:
        self.last_progress = time.monotonic()
        if self.config.once:
            with self.engine.connect() as conn:
                due = self.store.has_due(conn, now=_now())
            if not due:
                self._stopping.set()
                return
            self._sleep(min(0.2, self.config.poll_interval.total_seconds()))
            return
        if self._notify and self.leases.view.epochs and self.leases.set_idle(True, now=_now()):
            return  # claim once more: a commit that saw us busy did not NOTIFY
        self._wait_for_work()

    def _wait_for_work(self) -> None:
        """Sleep until a NOTIFY, the poll interval, the next lease renewal or stop()."""
        timeout = min(
            self.config.poll_interval.total_seconds(),
            max(self._next_housekeeping - time.monotonic(), 0.0),
        )
        self.waker.wait(timeout)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            self.waker.wait(left)

    # -- one batch -----------------------------------------------------------

    def _relay_batch(
        self, batch: list[ClaimedRow], owned: Sequence[int], *, conn: Connection | None = None
    ) -> None:
        if conn is None:
            with self.engine.connect() as own:
                self._relay_batch(batch, owned, conn=own)
            return
        started = time.perf_counter()
        stream_for = self.config.layout.stream_for
        # One pass, no per-row method call: this runs for every row relayed.
        entries = [
            OutgoingEntry(
                stream_for(row.topic, row.key_hash),
                encode_entry(
                    message_id=row.message_id,
                    topic=row.topic,
                    type=row.type,
                    source=row.source,
                    key=row.key,
                    time=row.created_at,
                    headers_json=row.headers,
                    data_json=row.payload,
                ),
                row.key,
            )
            for row in batch
        ]
        result = self.publisher.publish(
            entries, fences=self.leases.fences(owned), incarnation=self.incarnation.expected()
        )
        self._broker_backoff.reset()
        crash_point("relay.after_publish")
        if self._incarnation_changed(result):
            conn.rollback()
            return  # nothing was written: the next claim starts with the replayed rows
        self._fences_pending = False
        incarnation = None if result.incarnation is None else (self.incarnation.name, result.incarnation)
        published, failures = self._split(batch, result)
        now = _now()
        keep = self.config.replay_window > dt.timedelta(0)
        done = self.store.complete(conn, published, keep=keep, now=now, incarnation=incarnation)
        if keep and published:
            self.incarnation.confirm(conn, result.incarnation, now=now)
        dead = self.store.record_failures(conn, failures, max_attempts=self.config.max_attempts, now=now)
        crash_point("relay.after_mark")
        conn.commit()
        if self._notify and len(batch) >= min(_BUSY_AT, self.config.batch_size):
            # Commits arrive faster than one per wake-up: stop asking writers to
            # NOTIFY (it serialises their commits) and keep claiming until empty.
            self.leases.set_idle(False, now=now)
        self._account(batch, published, failures, dead, done, started)
        if result.transient_error is not None:
            raise BrokerError(f"broker refused part of a batch: {result.transient_error}")

    def _split(
        self, batch: list[ClaimedRow], result: PublishResult
    ) -> tuple[list[ClaimedRow], list[Failure]]:
        published: list[ClaimedRow] = []
        failures: list[Failure] = []
        now = _now()
        base, cap = self.config.retry_base.total_seconds(), self.config.retry_max.total_seconds()
        for row, outcome in zip(batch, result.outcomes, strict=True):
            if outcome.outcome is Outcome.PUBLISHED:
                published.append(row)
            elif outcome.outcome is Outcome.REJECTED:
                delay = backoff_delay(row.attempts + 1, base=base, cap=cap)
                failures.append(Failure(row, outcome.error or "rejected", now + dt.timedelta(seconds=delay)))
        return published, failures

    def _account(
        self,
        batch: list[ClaimedRow],
        published: list[ClaimedRow],
        failures: list[Failure],
        dead: list[ClaimedRow],
        done: int,
        started: float,
    ) -> None:
        duration = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.published += len(published)
        self.stats.rejected += len(failures)
        self.stats.dead_lettered += len(dead)
        self.last_progress = time.monotonic()
        self._log.info(
            "relay.batch_published",
            batch_size=len(batch),
            published=len(published),
            marked=done,
            rejected=len(failures),
            topic=batch[0].topic if len({r.topic for r in batch}) == 1 else None,
            duration_ms=round(duration * 1000, 2),
        )
        for failure in failures:
            self._log.warning(
                "relay.message_rejected",
                message_id=str(failure.row.message_id),
                topic=failure.row.topic,
                key=failure.row.key,
                attempt=failure.row.attempts + 1,
                error=failure.error,
            )
        for row in dead:
            self._log.error(
                "relay.dead_lettered", message_id=str(row.message_id), topic=row.topic, key=row.key
            )
        if self.metrics is not None:
            self.metrics.record_batch(published, len(failures), len(dead), duration)

    def _count_failure(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.failures.labels(reason=reason).inc()

    def _incarnation_changed(self, result: PublishResult) -> bool:
        """If the broker reports another incarnation, adopt it (re-publishing the replay window)."""
        replayed = self.incarnation.changed(result.incarnation)
        if replayed is None:
            return False
        self.stats.replayed += replayed
        return True
