"""The consumer runner: leases partitions, reads, dispatches, acknowledges.

Per-key order with concurrency: a topic's partitions are separate streams
(``StreamLayout``); each stream is handled by one asyncio task, one message
after another, and only while this process holds the stream's *lease* in the
broker. Several processes in one group share the streams through the leases
(each takes its fair share: ``ceil(streams / live members)``), so a key's
messages are never handled by two consumers at once, and every stream is read
whatever the number of topics, partitions and processes. A process that takes
over a stream first claims every entry still pending on it (those of the
previous owner, oldest first) and only then reads new ones.

``concurrency`` bounds the work in flight, not which streams are read: at most
that many partition tasks handle a batch at once (a semaphore), the others
wait with their batch in hand. Capping the leased streams instead left the
streams beyond ``concurrency`` unread for good, silently (issue 9).

Memory is bounded: each task holds at most one batch and reads again only
when it is finished, so slow handlers slow the reads (backpressure) instead of
filling a queue; with more partitions than ``concurrency`` the batch per read
shrinks so that a process holds about ``batch_size x concurrency`` entries (at
least one per partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import structlog
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from brokers import Delivery, PositionTracking, Subscriber
from outbox import (
    BrokerAuthError,
    BrokerError,
    ConfigError,
    SchemaMissingError,
    StorageError,
    create_async_engine,
    create_engine,
    redact_url,
    use_schema,
)
from outbox._dberrors import driver_reason
from outbox.errors import MIGRATE_HINT

from . import _metrics as m
from ._config import ConsumerConfig
from ._dispatch import Dispatcher
from ._health import ConsumerHealth
from ._layout_check import check_layout
from ._parking import release_parked
from ._positions import load_positions
from ._registry import Registry
from ._retention import purge_inbox
from .tables import consumer_offset
from .tables import inbox as inbox_table

__all__ = ["ConsumerRunner"]

log = structlog.get_logger("inbox")
_LAG_INTERVAL = 5.0
_RELEASE_INTERVAL = 1.0  # how often released parked entries are looked for (issue #9)
_START_ATTEMPTS = 20  # schema check at start: ~10 s for a busy or restarting database
_ONCE_MAX_FAILURES = 5  # the relay's --once contract: give up after this many consecutive outages
_START_RETRY_S = 0.5


@dataclass(eq=False)
class _Worker:
    stream: str
    # threading.Event: handlers of sync registries check them from a worker thread.
    stop: threading.Event = field(default_factory=threading.Event)  # finish the batch in hand, then stop
    halt: threading.Event = field(default_factory=threading.Event)  # lease lost: not one more entry
    lease_until: float = 0.0
    lost: bool = False
    task: asyncio.Task[None] | None = None


class ConsumerRunner:
    """Runs a :class:`~inbox.Registry`'s handlers against a broker's consumer group.

    Example::

        runner = ConsumerRunner(registry, db="postgresql+psycopg://...",
                                subscriber=connect_subscriber("redis://..."),
                                config=ConsumerConfig(group="billing"))
        await runner.run()          # until runner.stop() (the CLI wires SIGTERM to it)

    .. versionadded:: 0.1
    """

    def __init__(
        self, registry: Registry, *, db: str | Engine, subscriber: Subscriber, config: ConsumerConfig
    ) -> None:
        if not len(registry):
            msg = "the registry has no handlers"
            raise ConfigError(msg)
        if config.block > subscriber.max_block:
            msg = (
                f"block of {config.block.total_seconds():g}s must be below the broker client's socket timeout"
                f" (at most {subscriber.max_block.total_seconds():g}s)"
            )
            raise ConfigError(msg)
        self.config = config
        self.registry = registry
        self.subscriber = subscriber
        self._engine = use_schema(self._sync_engine(db), config.schema)
        self._async_engine: AsyncEngine | None = None
        if any(spec.is_async for spec in registry.specs):
            self._async_engine = create_async_engine(self._engine.url, schema=config.schema)
        self.streams = [s for topic in registry.topics for s in config.layout.streams_of(topic)]
        # Kafka: offsets stored with the inbox rows, and partitions started there (docs/consumers.md).
        positions = False
        if isinstance(subscriber, PositionTracking):
            positions, engine = True, self._engine
            subscriber.track_positions(lambda group, streams: load_positions(engine, group, streams))
        self._positions = positions
        self._dispatcher = Dispatcher(
            registry, config, self._engine, self._async_engine, track_positions=positions
        )
        self.health = ConsumerHealth(self._engine, lease_ttl=config.lease_ttl)
        # Lease and member keys start with the scope, so they carry the stream
        # prefix (a Redis ACL user limited to `~<prefix>*` can consume; issue #9).
        self._scope = f"{config.layout.prefix}{config.group}"
        self._stop = asyncio.Event()
        self._workers: dict[str, _Worker] = {}
        self._slots = asyncio.Semaphore(config.concurrency)  # batches handled at once
        self._once = False
        self._finished: set[str] = set()
        self._log = log.bind(consumer=config.group, consumer_name=config.consumer_name)

    def _sync_engine(self, db: str | Engine) -> Engine:
        if isinstance(db, Engine):
            return db
        # No pool_pre_ping: it costs a round trip per transaction. A dropped
        # connection fails the attempt as a transient error, is discarded by the
        # pool, and the message is retried on a fresh one.
        return create_engine(db, pool_size=self.config.concurrency + 2)

    @property
    def engine(self) -> Engine:
        """The consumer's database engine (the inbox and the handlers' tables)."""
        return self._engine

    def stop(self) -> None:
        """Ask the runner to stop: finish in-flight messages, acknowledge, release leases."""
        self._stop.set()

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, *, once: bool = False) -> None:
        """Consume until :meth:`stop`; with ``once``, until every stream is drained.

        Raises:
            ConfigError: the retention window is shorter than the redelivery horizon, or the
                broker holds unread entries of a registered topic under another partition layout.
            SchemaMissingError: the inbox tables do not exist.
        """
        self._once = once
        await self._prepare()
        self._log.info(
            "inbox.consumer_started",
            streams=len(self.streams),
            mode=self.config.mode.value,
            concurrency=self.config.concurrency,
            batch_size=self.config.batch_size,
        )
        side = [asyncio.create_task(self._manage_leases(once=once), name="inbox-leases")]
        if not once:
            side.append(asyncio.create_task(self._report_lag(), name="inbox-lag"))
            if self.config.retention is not None:
                side.append(asyncio.create_task(self._retain(self.config.retention), name="inbox-retention"))
        if self.config.on_dead_letter == "park-key":
            side.append(asyncio.create_task(self._release_parked(), name="inbox-parked"))
        stopped = asyncio.create_task(self._stop.wait(), name="inbox-stop")
        error: BaseException | None = None
        try:
            done, _ = await asyncio.wait([stopped, *side], return_when=asyncio.FIRST_COMPLETED)
            for task in side:
                if task in done and not task.cancelled() and task.exception() is not None:
                    error = task.exception()
        finally:
            await self._shutdown([stopped, *side])
        if error is not None:
            raise error

    def _check_schema(self) -> None:
        # A database that is briefly busy or not up yet at start (a locked SQLite
        # file, a PostgreSQL restarting) is waited for, up to ~10 s, before the
        # consumer gives up with one clear error.
        offsets = True
        for attempt in range(_START_ATTEMPTS):
            try:
                with self._engine.connect() as conn:
                    present = inspect(conn).has_table(inbox_table.name, schema=self.config.schema)
                    if present and self._positions:
                        offsets = inspect(conn).has_table(consumer_offset.name, schema=self.config.schema)
                break
            except DBAPIError as exc:
                last = attempt + 1 == _START_ATTEMPTS or not isinstance(exc, OperationalError)
                if last or _refused_for_good(exc):
                    msg = f"database at {redact_url(self._engine.url)} unreachable: {driver_reason(exc)}"
                    raise StorageError(msg) from exc
                self._log.warning(
                    "inbox.database_unavailable", error=type(exc.orig).__name__, attempt=attempt + 1
                )
                time.sleep(_START_RETRY_S)
        if not present:
            msg = f"inbox table {inbox_table.name!r} is missing: {MIGRATE_HINT}"
            raise SchemaMissingError(msg)
        if self._positions and not offsets:
            msg = f"table {consumer_offset.name!r} (Kafka offsets, revision 0006) is missing: {MIGRATE_HINT}"
            raise SchemaMissingError(msg)

    async def _prepare(self) -> None:
        await asyncio.to_thread(self._check_schema)
        failures = 0
        while True:
            try:
                # Before ensure_group, which creates the (empty) streams of our layout.
                await check_layout(
                    self.subscriber, self.config.layout, self.registry.topics, self.config.group, self._log
                )
                for stream in self.streams:
                    await self.subscriber.ensure_group(stream, self.config.group)
                await self._check_retention()
            except BrokerAuthError:
                raise  # credentials or ACL: retrying cannot help
            except BrokerError as exc:
                failures += 1
                self._log.warning("inbox.broker_unavailable", error=str(exc), attempt=failures)
                self._give_up_once(exc, failures)
                if await self._wait_stop(min(0.2 * 2**failures, 5.0)):
                    raise
            else:
                return

    def _give_up_once(self, exc: BrokerError, failures: int) -> None:
        """With ``once``, ``_ONCE_MAX_FAILURES`` failed attempts in a row end the run, as on the relay (#9).

        A cron job or a script must learn that nothing was consumed, not hang.
        """
        if self._once and failures >= _ONCE_MAX_FAILURES:
            msg = f"broker unavailable after {failures} attempts, giving up (--once): {exc}"
            raise BrokerError(msg) from exc

    async def _check_retention(self) -> None:
        retention = self.config.retention
        if retention is None:
            return
        horizon = self.config.redelivery_horizon
        if retention < horizon:
            msg = (
                f"inbox retention of {retention.total_seconds():g}s is shorter than the redelivery horizon"
                f" of {horizon.total_seconds():g}s (claim idle x max deliveries + lease TTL):"
                " a late redelivery would be processed twice"
            )
            raise ConfigError(msg)
        for stream in self.streams:
            await self._check_broker_horizon(stream, retention)

    async def _check_broker_horizon(self, stream: str, retention: dt.timedelta) -> None:
        """Warn once per group, stream and window when the broker can redeliver older entries (issue #9).

        The broker is asked, not the settings: every entry still in the stream
        is read again if the group is recreated, and a pending entry when it is
        claimed. The mark in the broker keeps restarts from repeating the warning.
        """
        horizon = await self.subscriber.redelivery_horizon(stream, self.config.group)
        if horizon.age <= retention:
            return
        marker = f"retention-warned:{retention.total_seconds():g}s:{stream}"
        if not await self.subscriber.mark_once(self._scope, marker):
            return
        self._log.warning(
            "inbox.retention_shorter_than_stream",
            stream=stream,
            entries=horizon.entries,
            oldest_entry_age_s=_seconds(horizon.oldest_entry_age),
            pending=horizon.pending,
            oldest_pending_age_s=_seconds(horizon.oldest_pending_age),
            removed_entries=horizon.removed,
            retention_s=retention.total_seconds(),
            consequence="a redelivery of an entry older than the retention window (group recreated"
            " from the start, pending entry claimed) is processed again; trim the stream"
            " (--stream-maxlen) below the window or lengthen --retention",
        )

    async def _shutdown(self, side: Sequence[asyncio.Task[Any]]) -> None:
        self._stop.set()
        for worker in self._workers.values():
            worker.stop.set()
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_timeout.total_seconds())
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                self._log.warning("inbox.shutdown_timeout", cancelled=len(pending))
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
        for worker in list(self._workers.values()):
            await self._release(worker)
        self._log.info("inbox.consumer_stopped", partitions=len(self._workers))
        self._workers.clear()

    async def aclose(self) -> None:
        """Close the broker client and dispose of the engines."""
        await self.subscriber.aclose()
        if self._async_engine is not None:
            await self._async_engine.dispose()
        self._engine.dispose()

    async def _wait_stop(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        return self._stop.is_set()

    # -- leases ----------------------------------------------------------------------

    async def _manage_leases(self, *, once: bool) -> None:
        ttl = self.config.lease_ttl
        failures = 0
        while not self._stop.is_set():
            try:
                live = await self.subscriber.heartbeat(self._scope, self.config.consumer_name, ttl=ttl)
                # Not capped by concurrency: a stream no member leases is never read.
                share = len(self.streams) if once else math.ceil(len(self.streams) / max(live, 1))
                await self._renew()
                self._rebalance(share)
                await self._acquire(share, once=once)
                failures = 0
            except BrokerAuthError:
                raise  # credentials or ACL: retrying cannot help
            except BrokerError as exc:
                failures += 1
                self._log.warning("inbox.broker_unavailable", error=str(exc), attempt=failures)
                self._give_up_once(exc, failures)
            self.health.lease_round(ok=failures == 0)
            self._reap()
            if once and not self._workers and len(self._finished) >= len(self.streams):
                return
            await self._wait_stop(0.05 if once else ttl.total_seconds() / 3)

    async def _renew(self) -> None:
        for worker in list(self._workers.values()):
            if worker.stop.is_set():
                continue
            started = time.monotonic()
            if await self.subscriber.acquire_lease(
                self._scope, worker.stream, self.config.consumer_name, ttl=self.config.lease_ttl
            ):
                worker.lease_until = started + self.config.lease_ttl.total_seconds()
            else:
                worker.lost = True
                worker.halt.set()
                worker.stop.set()
                self._log.warning("inbox.partition_lost", stream=worker.stream)

    def _rebalance(self, share: int) -> None:
        active = [w for w in self._workers.values() if not w.stop.is_set()]
        for worker in active[share:]:
            self._log.info("inbox.partition_released", stream=worker.stream, reason="rebalance")
            worker.stop.set()

    async def _acquire(self, share: int, *, once: bool) -> None:
        if not self.streams:
            return
        # Start at a member-specific offset so processes do not all contend for stream 0.
        offset = zlib.crc32(self.config.consumer_name.encode()) % len(self.streams)
        for i in range(len(self.streams)):
            if len(self._workers) >= share or self._stop.is_set():
                return
            stream = self.streams[(offset + i) % len(self.streams)]
            if stream in self._workers or (once and stream in self._finished):
                continue
            started = time.monotonic()
            if await self.subscriber.acquire_lease(
                self._scope, stream, self.config.consumer_name, ttl=self.config.lease_ttl
            ):
                worker = _Worker(stream, lease_until=started + self.config.lease_ttl.total_seconds())
                worker.task = asyncio.create_task(self._partition(worker, once=once), name=f"inbox:{stream}")
                self._workers[stream] = worker
                self._log.info("inbox.partition_acquired", stream=stream)
            elif once:
                self._finished.add(stream)  # another process drains it

    def _reap(self) -> None:
        """Forget finished workers; a worker that crashed stops the runner."""
        for stream, worker in list(self._workers.items()):
            if worker.task is None or not worker.task.done():
                continue
            del self._workers[stream]
            self._finished.add(stream)
            if not worker.task.cancelled() and (exc := worker.task.exception()) is not None:
                raise exc

    async def _release(self, worker: _Worker) -> None:
        if worker.lost:
            return
        with contextlib.suppress(BrokerError):
            await self.subscriber.release_lease(self._scope, worker.stream, self.config.consumer_name)

    # -- one partition ---------------------------------------------------------------

    async def _partition(self, worker: _Worker, *, once: bool) -> None:
        failures = 0
        next_claim = 0.0  # claim everything pending first: the previous owner's entries come before new ones
        min_idle = dt.timedelta(0)
        try:
            while not worker.stop.is_set():
                if time.monotonic() > worker.lease_until:
                    self._log.warning(
                        "inbox.partition_lost", stream=worker.stream, reason="lease not renewed"
                    )
                    worker.lost = True
                    return
                try:
                    if not await self._still_owner(worker):
                        return
                    if time.monotonic() >= next_claim:
                        await self._claim_all(worker, min_idle)
                        min_idle = self.config.claim_idle
                        next_claim = time.monotonic() + self.config.claim_idle.total_seconds() / 2
                    batch = await self.subscriber.read(
                        worker.stream,
                        self.config.group,
                        self.config.consumer_name,
                        count=self._read_count(),
                        block=self.config.block if not once else dt.timedelta(0),
                    )
                    if batch:
                        await self._process(worker, batch)
                    elif once:
                        return
                    failures = 0
                except BrokerAuthError:
                    raise  # credentials or ACL: retrying cannot help
                except BrokerError as exc:
                    failures += 1
                    self._log.warning(
                        "inbox.broker_unavailable", stream=worker.stream, error=str(exc), attempt=failures
                    )
                    # A failed read may have been executed with its reply lost (a
                    # link reset): its entries are pending for *this* consumer and
                    # a read of new entries would overtake them, breaking per-key
                    # order (the faults soak, issue 17). Claim everything pending
                    # first, as a takeover does, before reading new entries again.
                    next_claim, min_idle = 0.0, dt.timedelta(0)
                    await _wait_event(worker.stop, min(0.2 * 2**failures, 5.0))
        finally:
            await self._release(worker)

    async def _still_owner(self, worker: _Worker) -> bool:
        """Renew the lease right before reading: only the owner may take new entries.

        The periodic renewal alone leaves a window: a Redis restart loses the
        lease keys, another consumer takes the partition at once, and this one
        would keep reading until its next renewal — two readers of one
        partition break per-key order (found by the soak, issue 6).
        """
        started = time.monotonic()
        owned = await self.subscriber.acquire_lease(
            self._scope, worker.stream, self.config.consumer_name, ttl=self.config.lease_ttl
        )
        if owned:
            worker.lease_until = started + self.config.lease_ttl.total_seconds()
            return True
        worker.lost = True
        self._log.warning("inbox.partition_lost", stream=worker.stream, reason="taken over")
        return False

    async def _claim_all(self, worker: _Worker, min_idle: dt.timedelta) -> None:
        seen: set[str] = set()
        while not worker.stop.is_set():
            batch = await self.subscriber.claim(
                worker.stream,
                self.config.group,
                self.config.consumer_name,
                min_idle=min_idle,
                count=self.config.batch_size,
            )
            fresh = [d for d in batch if d.entry_id not in seen]
            if not fresh:
                return
            seen.update(d.entry_id for d in fresh)
            self._log.info("inbox.entries_claimed", stream=worker.stream, entries=len(fresh))
            await self._process(worker, fresh)

    def _read_count(self) -> int:
        """Entries per read: ``batch_size``, shrunk when more partitions than ``concurrency`` are held."""
        budget = self.config.batch_size * self.config.concurrency
        return max(1, min(self.config.batch_size, budget // max(len(self._workers), 1)))

    async def _process(self, worker: _Worker, batch: list[Delivery]) -> None:
        async with self._slots:
            if worker.halt.is_set() or time.monotonic() > worker.lease_until:
                return  # lost while waiting for a slot: the entries stay pending for the next owner
            acks = await self._dispatcher.handle(batch, worker.stop, worker.halt)
            # Acknowledged only now, after the commits: a crash before this line
            # means redelivery, which the inbox turns into duplicates.
            await self.subscriber.ack(worker.stream, self.config.group, acks)

    # -- side tasks ------------------------------------------------------------------

    async def _report_lag(self) -> None:
        while not await self._wait_stop(_LAG_INTERVAL):
            for stream in list(self._workers):
                with contextlib.suppress(BrokerError):
                    status = await self.subscriber.group_status(stream, self.config.group)
                    if status is not None:
                        m.PENDING.labels(self.config.group, stream).set(status.pending)
                        if status.lag is not None:
                            m.LAG.labels(self.config.group, stream).set(status.lag)

    async def _release_parked(self) -> None:
        """Hand parked entries to their handlers once the dead letter ahead of them is retried or purged."""
        while True:
            try:
                await _to_thread_to_the_end(release_parked, self._engine, self.registry, self.config.group)
            except (DBAPIError, StorageError) as exc:
                # A database outage must not end the consumer from this side task:
                # the handlers ride it out too, and the next round tries again.
                self._log.warning(
                    "inbox.storage_unavailable", task="release_parked", error=type(exc).__name__
                )
            if await self._wait_stop(_RELEASE_INTERVAL):
                return

    async def _retain(self, retention: dt.timedelta) -> None:
        while not await self._wait_stop(self.config.retention_interval.total_seconds()):
            deleted = await _to_thread_to_the_end(
                purge_inbox,
                self._engine,
                older_than=retention,
                consumer=self.config.group,
                batch_size=self.config.retention_batch,
                pause=dt.timedelta(milliseconds=10),
            )
            if deleted:
                self._log.info(
                    "inbox.retention_purged", deleted=deleted, older_than_s=retention.total_seconds()
                )


def _seconds(value: dt.timedelta | None) -> int | None:
    return None if value is None else round(value.total_seconds())


async def _wait_event(event: threading.Event, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    # A threading.Event shared with worker threads cannot be awaited: poll it.
    while not event.is_set() and (left := deadline - time.monotonic()) > 0:  # noqa: ASYNC110
        await asyncio.sleep(min(left, 0.05))


# Waiting cannot fix these: a mistyped database name, a wrong password or role,
# a pg_hba.conf refusal. Say so at once instead of after ~10 s of retries (#9).
T = TypeVar("T")
P = ParamSpec("P")


async def _to_thread_to_the_end(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``asyncio.to_thread`` that, when cancelled, still waits for its thread before re-raising.

    Cancelling a task does not stop the thread it awaits. A side task (parked
    keys, retention) cancelled at shutdown left its thread holding a pooled
    connection, which it handed back after ``aclose`` had disposed of the
    engine: never closed, it surfaced later as psycopg's "deleted while still
    open" ResourceWarning in an unrelated test.
    """
    future = asyncio.ensure_future(asyncio.to_thread(func, *args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


_REFUSED_FOR_GOOD = ("does not exist", "password authentication failed", "no pg_hba.conf entry")


def _refused_for_good(exc: DBAPIError) -> bool:
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    text = str(exc.orig).lower()
    return sqlstate.startswith(("3D", "28")) or any(marker in text for marker in _REFUSED_FOR_GOOD)
