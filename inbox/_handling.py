"""Handling delivered entries: decode, dedup, run the handler, retry, dead-letter.

One :class:`Dispatcher` per runner. It returns the entry ids that may be
acknowledged: an entry is acknowledged only once its outcome is committed
(effects + inbox row, or a dead letter), never before.

Sync handlers run in a worker thread, one thread hop per batch (not per
message): the per-message transactions, retries and dead letters of a batch
all happen inside that one call, which keeps per-message mode close to the raw
commit rate. ``async def`` handlers run on the event loop.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import Engine, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from outbox import DecodeError, Envelope, SchemaMissingError, StorageError, decode_entry
from outbox.brokers import Delivery

from . import _metrics as m
from ._config import ConsumerConfig, Mode
from ._dead_letters import insert_dead_letter
from ._dedup import (
    AsyncHandler,
    Outcome,
    SyncHandler,
    process,
    process_async,
    record_messages,
    record_messages_async,
)
from ._registry import HandlerSpec, Registry, Reject
from .tables import inbox

__all__ = ["Dispatcher", "is_transient"]

log = structlog.get_logger("inbox")


def is_transient(exc: BaseException) -> bool:
    """Database unavailable, deadlock, serialization failure: retry without counting a delivery."""
    if isinstance(exc, SchemaMissingError):
        return False
    cause = exc.__cause__ if isinstance(exc, StorageError) else exc
    return isinstance(cause, OperationalError | InterfaceError)


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(slots=True)
class _Item:
    delivery: Delivery
    message: Envelope
    spec: HandlerSpec


class _Verdict(enum.Enum):
    RETRY = "retry"  # counted attempt; retry after a backoff
    TRANSIENT = "transient"  # the database failed, not the handler; retry without counting
    DEAD = "dead"  # out of attempts: dead-letter
    LEAVE = "leave"  # stopping: leave it pending for the partition's next owner


class Dispatcher:
    """Runs registered handlers on delivered entries, per message or per batch."""

    def __init__(
        self, registry: Registry, config: ConsumerConfig, engine: Engine, async_engine: AsyncEngine | None
    ) -> None:
        self._registry = registry
        self._config = config
        self._engine = engine
        self._async_engine = async_engine
        self._consumer = config.group
        self._all_sync = not any(spec.is_async for spec in registry.specs)

    async def handle(
        self, batch: Sequence[Delivery], stop: threading.Event, halt: threading.Event
    ) -> list[str]:
        """Handle a batch from one stream in order; return the entry ids to acknowledge.

        ``stop`` (graceful shutdown) ends retries early, leaving the failing
        entry pending; ``halt`` (partition lost) stops before the next entry.
        An entry left pending ends the batch, so later entries of its key never
        overtake it.
        """
        if self._all_sync:
            return await asyncio.to_thread(self._handle_sync, batch, stop, halt)
        return await self._handle_mixed(batch, stop, halt)

    # -- preparing -------------------------------------------------------------------

    def _prepare_all(self, batch: Sequence[Delivery], stop: threading.Event) -> tuple[list[str], list[_Item]]:
        """Decode and route; entries finished here (dead-lettered, ignored) are acknowledged at once."""
        acks: list[str] = []
        items: list[_Item] = []
        for delivery in batch:
            item, finished = self._prepare(delivery, stop)
            if item is not None:
                items.append(item)
            elif finished:
                acks.append(delivery.entry_id)
            else:
                break
        return acks, items

    def _prepare(self, delivery: Delivery, stop: threading.Event) -> tuple[_Item | None, bool]:
        try:
            message = decode_entry(delivery.fields)
        except DecodeError as exc:
            return None, self._dead_letter(
                delivery, None, f"undecodable entry: {exc}", delivery.deliveries, stop
            )
        spec = self._registry.match(message)
        if spec is None:
            m.MESSAGES.labels(self._consumer, message.topic, "ignored").inc()
            log.info(
                "inbox.message_ignored",
                message_id=str(message.id),
                topic=message.topic,
                type=message.type,
                consumer=self._consumer,
                reason="no handler for this type",
            )
            return None, True
        if delivery.deliveries > self._config.poison_deliveries:
            # Its consumers keep dying on it (or losing the partition): a poison
            # pill that kills the process. Stop the crash loop, unless it was in
            # fact processed and only the acknowledgement kept failing.
            if self._already_processed(message):
                self._record_outcome(message, Outcome.DUPLICATE, delivery.deliveries, None)
                return None, True
            reason = (
                f"delivered {delivery.deliveries} times without completing"
                f" (over {self._config.poison_deliveries}): its consumers died or lost its partition"
            )
            return None, self._dead_letter(delivery, message, reason, delivery.deliveries, stop)
        return _Item(delivery, message, spec), False

    def _already_processed(self, message: Envelope) -> bool:
        query = select(inbox.c.message_id).where(
            inbox.c.consumer == self._consumer, inbox.c.message_id == str(message.id)
        )
        with self._engine.connect() as conn:
            return conn.execute(query).first() is not None

    # -- outcomes --------------------------------------------------------------------

    def _record_outcome(
        self, message: Envelope, outcome: Outcome, attempt: int, seconds: float | None
    ) -> None:
        m.MESSAGES.labels(self._consumer, message.topic, outcome.value).inc()
        ids = {"message_id": str(message.id), "topic": message.topic, "consumer": self._consumer}
        if outcome is Outcome.DUPLICATE:
            log.info("inbox.duplicate_skipped", **ids, attempt=attempt)
            return
        if seconds is None:  # part of a batch: the batch logs one line
            log.debug("inbox.message_handled", **ids, attempt=attempt)
            return
        m.HANDLER_SECONDS.labels(self._consumer, message.topic).observe(seconds)
        log.info(
            "inbox.message_handled",
            **ids,
            attempt=attempt,
            duration_ms=round(seconds * 1000, 3),
            key=message.key,
        )

    def _verdict(self, item: _Item, exc: Exception, attempt: int, stop: threading.Event) -> _Verdict:
        if isinstance(exc, SchemaMissingError):
            raise exc
        if is_transient(exc):
            log.warning(
                "inbox.storage_unavailable",
                message_id=str(item.message.id),
                consumer=self._consumer,
                error=_error_text(exc),
            )
            return _Verdict.LEAVE if stop.is_set() else _Verdict.TRANSIENT
        final = attempt >= self._config.max_deliveries
        m.FAILURES.labels(self._consumer, item.message.topic).inc()
        log.warning(
            "inbox.handler_failed",
            message_id=str(item.message.id),
            topic=item.message.topic,
            consumer=self._consumer,
            error=_error_text(exc),
            attempt=attempt,
            will_retry=not final,
            handler=item.spec.name,
            exc_info=exc,
        )
        if final:
            return _Verdict.DEAD
        return _Verdict.LEAVE if stop.is_set() else _Verdict.RETRY

    def _delay(self, attempt: int) -> float:
        delay = min(self._config.retry_delay * (1 << min(attempt - 1, 16)), self._config.max_retry_delay)
        return delay.total_seconds()

    def _dead_letter(
        self, delivery: Delivery, message: Envelope | None, error: str, deliveries: int, stop: threading.Event
    ) -> bool:
        """Record the dead letter (committed before the ack); False if stopped during a database outage."""
        failures = 0
        while True:
            try:
                with self._engine.begin() as conn:
                    insert_dead_letter(
                        conn,
                        consumer=self._consumer,
                        delivery=delivery,
                        message=message,
                        error=error,
                        deliveries=deliveries,
                    )
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                log.warning("inbox.storage_unavailable", consumer=self._consumer, error=_error_text(exc))
                if stop.wait(self._delay(failures)):
                    return False
        m.DEAD_LETTERED.labels(self._consumer, delivery.stream).inc()
        if message is not None:
            m.MESSAGES.labels(self._consumer, message.topic, "dead_lettered").inc()
        log.error(
            "inbox.dead_lettered",
            message_id=None if message is None else str(message.id),
            topic=None if message is None else message.topic,
            consumer=self._consumer,
            stream=delivery.stream,
            entry_id=delivery.entry_id,
            deliveries=deliveries,
            error=error,
        )
        return True

    # -- sync handlers (in a worker thread) --------------------------------------------

    def _handle_sync(
        self, batch: Sequence[Delivery], stop: threading.Event, halt: threading.Event
    ) -> list[str]:
        acks, items = self._prepare_all(batch, stop)
        if len(acks) + len(items) < len(batch):
            return acks
        if self._config.mode is Mode.BATCH and len(items) > 1:
            return acks + self._batch_sync(items, stop, halt)
        return acks + self._one_by_one_sync(items, stop, halt)

    def _one_by_one_sync(
        self, items: Sequence[_Item], stop: threading.Event, halt: threading.Event
    ) -> list[str]:
        acks = []
        for item in items:
            if halt.is_set() or not self._handle_one_sync(item, stop):
                break  # this and the later entries stay pending for the partition's next owner
            acks.append(item.delivery.entry_id)
        return acks

    def _handle_one_sync(self, item: _Item, stop: threading.Event) -> bool:
        """Process with retries; True when finished (committed or dead-lettered)."""
        attempt = item.delivery.deliveries
        transient = 0
        while True:
            started = time.perf_counter()
            try:
                outcome = self._execute_sync(item, attempt)
            except Reject as exc:
                return self._dead_letter(
                    item.delivery, item.message, f"rejected: {exc.reason}", attempt, stop
                )
            except Exception as exc:  # noqa: BLE001 - a handler may raise anything
                verdict = self._verdict(item, exc, attempt, stop)
                if verdict is _Verdict.DEAD:
                    return self._dead_letter(item.delivery, item.message, _error_text(exc), attempt, stop)
                if verdict is _Verdict.LEAVE:
                    return False
                if verdict is _Verdict.TRANSIENT:
                    transient += 1
                    stop.wait(self._delay(transient))
                    continue
                stop.wait(self._delay(attempt))
                attempt += 1
                continue
            self._record_outcome(item.message, outcome, attempt, time.perf_counter() - started)
            return True

    def _execute_sync(self, item: _Item, attempt: int) -> Outcome:
        with (
            structlog.contextvars.bound_contextvars(
                message_id=str(item.message.id), correlation_id=item.message.correlation_id
            ),
            Session(self._engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            handler: SyncHandler = item.spec.func  # type: ignore[assignment]
            return process(session, self._consumer, item.message, handler, attempts=attempt)

    def _batch_sync(self, items: list[_Item], stop: threading.Event, halt: threading.Event) -> list[str]:
        if halt.is_set():
            return []
        started = time.perf_counter()
        try:
            outcomes = self._execute_batch_sync(items)
        except Exception as exc:
            if isinstance(exc, SchemaMissingError):
                raise
            return self._batch_failed(items, exc) or self._one_by_one_sync(items, stop, halt)
        self._batch_done(items, outcomes, time.perf_counter() - started)
        return [item.delivery.entry_id for item in items]

    def _batch_failed(self, items: list[_Item], exc: Exception) -> list[str]:
        # One failure rolls the whole batch back; it is redone one message at a
        # time, so the failing message is retried and dead-lettered alone and
        # the others commit on their own.
        log.warning(
            "inbox.batch_failed",
            consumer=self._consumer,
            stream=items[0].delivery.stream,
            batch_size=len(items),
            error=_error_text(exc),
        )
        return []

    def _batch_done(self, items: list[_Item], outcomes: list[Outcome], seconds: float) -> None:
        for item, outcome in zip(items, outcomes, strict=True):
            self._record_outcome(item.message, outcome, item.delivery.deliveries, None)
        m.HANDLER_SECONDS.labels(self._consumer, items[0].message.topic).observe(seconds / len(items))
        log.info(
            "inbox.batch_handled",
            consumer=self._consumer,
            stream=items[0].delivery.stream,
            batch_size=len(items),
            processed=sum(o is Outcome.PROCESSED for o in outcomes),
            duration_ms=round(seconds * 1000, 3),
        )

    def _execute_batch_sync(self, items: list[_Item]) -> list[Outcome]:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            fresh = record_messages(
                session,
                self._consumer,
                [(i.message.id, i.message.topic) for i in items],
                attempts=max(i.delivery.deliveries for i in items),
            )
            outcomes = []
            for item in items:
                message_id = str(item.message.id)
                if message_id in fresh:
                    fresh.discard(message_id)  # the same id twice in one batch runs once
                    handler: SyncHandler = item.spec.func  # type: ignore[assignment]
                    handler(item.message, session)
                    outcomes.append(Outcome.PROCESSED)
                else:
                    outcomes.append(Outcome.DUPLICATE)
            return outcomes

    # -- registries with async handlers ----------------------------------------------

    async def _handle_mixed(
        self, batch: Sequence[Delivery], stop: threading.Event, halt: threading.Event
    ) -> list[str]:
        acks, items = await asyncio.to_thread(self._prepare_all, batch, stop)
        if len(acks) + len(items) < len(batch):
            return acks
        if self._config.mode is Mode.BATCH:
            return acks + await self._runs_mixed(items, stop, halt)
        for item in items:
            if halt.is_set():
                break
            if item.spec.is_async:
                done = await self._handle_one_async(item, stop)
            else:
                done = await asyncio.to_thread(self._handle_one_sync, item, stop)
            if not done:
                break
            acks.append(item.delivery.entry_id)
        return acks

    async def _runs_mixed(
        self, items: list[_Item], stop: threading.Event, halt: threading.Event
    ) -> list[str]:
        """Batch mode with async handlers: consecutive sync or async items share one transaction."""
        acks: list[str] = []
        start = 0
        while start < len(items):
            end = start
            while end < len(items) and items[end].spec.is_async == items[start].spec.is_async:
                end += 1
            run = items[start:end]
            if run[0].spec.is_async:
                done = await self._batch_async(run, stop, halt)
            else:
                done = await asyncio.to_thread(self._batch_sync, run, stop, halt)
            acks.extend(done)
            if len(done) < len(run):
                break
            start = end
        return acks

    async def _batch_async(
        self, items: list[_Item], stop: threading.Event, halt: threading.Event
    ) -> list[str]:
        if halt.is_set():
            return []
        started = time.perf_counter()
        try:
            outcomes = await self._execute_batch_async(items)
        except Exception as exc:
            if isinstance(exc, SchemaMissingError):
                raise
            self._batch_failed(items, exc)
            acks = []
            for item in items:
                if halt.is_set() or not await self._handle_one_async(item, stop):
                    break
                acks.append(item.delivery.entry_id)
            return acks
        self._batch_done(items, outcomes, time.perf_counter() - started)
        return [item.delivery.entry_id for item in items]

    async def _execute_batch_async(self, items: list[_Item]) -> list[Outcome]:
        if self._async_engine is None:  # pragma: no cover - the runner creates it for async handlers
            msg = "async handlers need an async engine"
            raise StorageError(msg)
        async with AsyncSession(self._async_engine, expire_on_commit=False) as session, session.begin():
            fresh = await record_messages_async(
                session,
                self._consumer,
                [(i.message.id, i.message.topic) for i in items],
                attempts=max(i.delivery.deliveries for i in items),
            )
            outcomes = []
            for item in items:
                message_id = str(item.message.id)
                if message_id in fresh:
                    fresh.discard(message_id)
                    handler: AsyncHandler = item.spec.func  # type: ignore[assignment]
                    await handler(item.message, session)
                    outcomes.append(Outcome.PROCESSED)
                else:
                    outcomes.append(Outcome.DUPLICATE)
            return outcomes

    async def _handle_one_async(self, item: _Item, stop: threading.Event) -> bool:
        attempt = item.delivery.deliveries
        transient = 0
        while True:
            started = time.perf_counter()
            try:
                outcome = await self._execute_async(item, attempt)
            except Reject as exc:
                error = f"rejected: {exc.reason}"
                return await asyncio.to_thread(
                    self._dead_letter, item.delivery, item.message, error, attempt, stop
                )
            except Exception as exc:  # noqa: BLE001 - a handler may raise anything
                verdict = self._verdict(item, exc, attempt, stop)
                if verdict is _Verdict.DEAD:
                    error = _error_text(exc)
                    return await asyncio.to_thread(
                        self._dead_letter, item.delivery, item.message, error, attempt, stop
                    )
                if verdict is _Verdict.LEAVE:
                    return False
                if verdict is _Verdict.TRANSIENT:
                    transient += 1
                    await _wait(stop, self._delay(transient))
                    continue
                await _wait(stop, self._delay(attempt))
                attempt += 1
                continue
            self._record_outcome(item.message, outcome, attempt, time.perf_counter() - started)
            return True

    async def _execute_async(self, item: _Item, attempt: int) -> Outcome:
        if self._async_engine is None:  # pragma: no cover - the runner creates it for async handlers
            msg = "async handlers need an async engine"
            raise StorageError(msg)
        with structlog.contextvars.bound_contextvars(
            message_id=str(item.message.id), correlation_id=item.message.correlation_id
        ):
            async with AsyncSession(self._async_engine, expire_on_commit=False) as session, session.begin():
                handler: AsyncHandler = item.spec.func  # type: ignore[assignment]
                return await process_async(session, self._consumer, item.message, handler, attempts=attempt)


async def _wait(stop: threading.Event, seconds: float) -> None:
    """Sleep up to ``seconds``, waking early when ``stop`` is set."""
    deadline = time.monotonic() + seconds
    # A threading.Event shared with worker threads cannot be awaited: poll it.
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:  # noqa: ASYNC110
        await asyncio.sleep(min(left, 0.05))
