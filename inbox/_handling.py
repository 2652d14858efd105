"""Handling delivered entries: decode, dedup, run the handler, retry, dead-letter.

One :class:`Dispatcher` per runner. It returns the entry ids that may be
acknowledged: an entry is acknowledged only once its outcome is committed
(effects + inbox row, or a dead letter), never before.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from ._dedup import AsyncHandler, Outcome, SyncHandler, process, process_async, record_messages
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

    # -- entry points ----------------------------------------------------------------

    async def handle(self, batch: Sequence[Delivery], stop: asyncio.Event, halt: asyncio.Event) -> list[str]:
        """Handle a batch from one stream in order; return the entry ids to acknowledge.

        ``stop`` (graceful shutdown) ends retries early, leaving the failing
        entry pending; ``halt`` (partition lost) stops before the next entry.
        An entry left pending stops the batch, so later entries of its key
        never overtake it.
        """
        acks: list[str] = []
        items: list[_Item] = []
        for delivery in batch:
            item = await self._prepare(delivery)
            if item is None:
                acks.append(delivery.entry_id)
            else:
                items.append(item)
        if self._config.mode is Mode.BATCH and len(items) > 1:
            acks.extend(await self._handle_runs(items, stop, halt))
        else:
            acks.extend(await self._one_by_one(items, stop, halt))
        return acks

    async def _one_by_one(
        self, items: Sequence[_Item], stop: asyncio.Event, halt: asyncio.Event
    ) -> list[str]:
        acks = []
        for item in items:
            if halt.is_set() or not await self._handle_one(item, stop):
                break  # this and the later entries stay pending for the partition's next owner
            acks.append(item.delivery.entry_id)
        return acks

    async def _prepare(self, delivery: Delivery) -> _Item | None:
        """Decode and route; None when the entry is finished here (dead-lettered or ignored)."""
        try:
            message = decode_entry(delivery.fields)
        except DecodeError as exc:
            await self._dead_letter(delivery, None, f"undecodable entry: {exc}", delivery.deliveries)
            return None
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
            return None
        if delivery.deliveries > self._config.poison_deliveries:
            # Its consumers keep dying on it (or losing the partition): a poison
            # pill that kills the process. Stop the crash loop, unless it was
            # in fact processed and only the acknowledgement kept failing.
            if await asyncio.to_thread(self._already_processed, message):
                m.MESSAGES.labels(self._consumer, message.topic, Outcome.DUPLICATE.value).inc()
                log.info(
                    "inbox.duplicate_skipped",
                    message_id=str(message.id),
                    topic=message.topic,
                    consumer=self._consumer,
                    attempt=delivery.deliveries,
                )
                return None
            reason = (
                f"delivered {delivery.deliveries} times without completing"
                f" (over {self._config.poison_deliveries}): its consumers died or lost its partition"
            )
            await self._dead_letter(delivery, message, reason, delivery.deliveries)
            return None
        return _Item(delivery, message, spec)

    def _already_processed(self, message: Envelope) -> bool:
        with self._engine.connect() as conn:
            found = conn.execute(
                select(inbox.c.message_id).where(
                    inbox.c.consumer == self._consumer, inbox.c.message_id == str(message.id)
                )
            ).first()
        return found is not None

    # -- one message -----------------------------------------------------------------

    async def _handle_one(self, item: _Item, stop: asyncio.Event) -> bool:
        """Process with retries; True when finished (committed or dead-lettered)."""
        attempt = item.delivery.deliveries
        transient_failures = 0
        with structlog.contextvars.bound_contextvars(
            message_id=str(item.message.id),
            topic=item.message.topic,
            consumer=self._consumer,
            stream=item.delivery.stream,
            correlation_id=item.message.correlation_id,
        ):
            while True:
                started = time.perf_counter()
                try:
                    outcome = await self._execute(item, attempt)
                except Reject as exc:
                    await self._dead_letter(item.delivery, item.message, f"rejected: {exc.reason}", attempt)
                    return True
                except Exception as exc:
                    if isinstance(exc, SchemaMissingError):
                        raise
                    if is_transient(exc):
                        transient_failures += 1
                        log.warning("inbox.storage_unavailable", error=_error_text(exc), attempt=attempt)
                        if stop.is_set():
                            return False
                        await self._sleep(transient_failures, stop)
                        continue
                    if not await self._failed(item, exc, attempt, stop):
                        return attempt >= self._config.max_deliveries
                    attempt += 1
                    continue
                self._record(item, outcome, attempt, time.perf_counter() - started)
                return True

    async def _failed(self, item: _Item, exc: Exception, attempt: int, stop: asyncio.Event) -> bool:
        """Log a failure; dead-letter at the limit. True to try again."""
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
            await self._dead_letter(item.delivery, item.message, _error_text(exc), attempt)
            return False
        if stop.is_set():  # leave it pending: the next owner of the partition retries it
            return False
        await self._sleep(attempt, stop)
        return True

    async def _sleep(self, attempt: int, stop: asyncio.Event) -> None:
        delay = min(
            self._config.retry_delay * (2 ** min(attempt - 1, 16)), self._config.max_retry_delay
        ).total_seconds()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)

    def _record(self, item: _Item, outcome: Outcome, attempt: int, seconds: float) -> None:
        topic = item.message.topic
        m.MESSAGES.labels(self._consumer, topic, outcome.value).inc()
        ids = {"message_id": str(item.message.id), "topic": topic, "consumer": self._consumer}
        if outcome is Outcome.DUPLICATE:
            log.info("inbox.duplicate_skipped", **ids, attempt=attempt)
            return
        m.HANDLER_SECONDS.labels(self._consumer, topic).observe(seconds)
        log.info(
            "inbox.message_handled",
            **ids,
            attempt=attempt,
            duration_ms=round(seconds * 1000, 3),
            key=item.message.key,
            handler=item.spec.name,
        )

    async def _execute(self, item: _Item, attempt: int) -> Outcome:
        if item.spec.is_async:
            engine = self._require_async()
            async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
                handler: AsyncHandler = item.spec.func  # type: ignore[assignment]
                return await process_async(session, self._consumer, item.message, handler, attempts=attempt)
        return await asyncio.to_thread(self._execute_sync, item, attempt)

    def _execute_sync(self, item: _Item, attempt: int) -> Outcome:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            handler: SyncHandler = item.spec.func  # type: ignore[assignment]
            return process(session, self._consumer, item.message, handler, attempts=attempt)

    def _require_async(self) -> AsyncEngine:
        if self._async_engine is None:
            msg = "async handlers need an async engine"
            raise StorageError(msg)
        return self._async_engine

    # -- dead letters ----------------------------------------------------------------

    async def _dead_letter(
        self, delivery: Delivery, message: Envelope | None, error: str, deliveries: int
    ) -> None:
        """Record the dead letter (committed before the entry is acknowledged), retrying through outages."""
        failures = 0
        while True:
            try:
                await asyncio.to_thread(self._dead_letter_sync, delivery, message, error, deliveries)
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                log.warning("inbox.storage_unavailable", error=_error_text(exc), attempt=failures)
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
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

    def _dead_letter_sync(
        self, delivery: Delivery, message: Envelope | None, error: str, deliveries: int
    ) -> None:
        with self._engine.begin() as conn:
            insert_dead_letter(
                conn,
                consumer=self._consumer,
                delivery=delivery,
                message=message,
                error=error,
                deliveries=deliveries,
            )

    # -- batches ---------------------------------------------------------------------

    async def _handle_runs(self, items: list[_Item], stop: asyncio.Event, halt: asyncio.Event) -> list[str]:
        """Batch mode: consecutive items of one kind (sync/async) share a transaction."""
        acks: list[str] = []
        start = 0
        while start < len(items):
            end = start
            while end < len(items) and items[end].spec.is_async == items[start].spec.is_async:
                end += 1
            done = await self._handle_run(items[start:end], stop, halt)
            acks.extend(done)
            if len(done) < end - start:
                break
            start = end
        return acks

    async def _handle_run(self, run: list[_Item], stop: asyncio.Event, halt: asyncio.Event) -> list[str]:
        if halt.is_set():
            return []
        started = time.perf_counter()
        try:
            if run[0].spec.is_async:
                outcomes = await self._execute_batch_async(run)
            else:
                outcomes = await asyncio.to_thread(self._execute_batch_sync, run)
        except Exception as exc:
            if isinstance(exc, SchemaMissingError):
                raise
            # One failure rolls the whole batch back; redo it one message at a
            # time, so the failing message is retried and dead-lettered alone
            # and the others commit on their own.
            log.warning(
                "inbox.batch_failed", batch_size=len(run), error=_error_text(exc), consumer=self._consumer
            )
            return await self._one_by_one(run, stop, halt)
        seconds = time.perf_counter() - started
        for item, outcome in zip(run, outcomes, strict=True):
            m.MESSAGES.labels(self._consumer, item.message.topic, outcome.value).inc()
            if outcome is Outcome.DUPLICATE:
                log.info(
                    "inbox.duplicate_skipped",
                    message_id=str(item.message.id),
                    topic=item.message.topic,
                    consumer=self._consumer,
                    attempt=item.delivery.deliveries,
                )
            else:
                log.debug(
                    "inbox.message_handled",
                    message_id=str(item.message.id),
                    topic=item.message.topic,
                    consumer=self._consumer,
                    attempt=item.delivery.deliveries,
                )
        m.HANDLER_SECONDS.labels(self._consumer, run[0].message.topic).observe(seconds / len(run))
        log.info(
            "inbox.batch_handled",
            consumer=self._consumer,
            stream=run[0].delivery.stream,
            batch_size=len(run),
            processed=sum(o is Outcome.PROCESSED for o in outcomes),
            duration_ms=round(seconds * 1000, 3),
        )
        return [item.delivery.entry_id for item in run]

    def _execute_batch_sync(self, run: list[_Item]) -> list[Outcome]:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            fresh = record_messages(
                session,
                self._consumer,
                [(i.message.id, i.message.topic) for i in run],
                attempts=max(i.delivery.deliveries for i in run),
            )
            outcomes = []
            for item in run:
                if str(item.message.id) in fresh:
                    fresh.discard(str(item.message.id))  # the same id twice in one batch runs once
                    handler: SyncHandler = item.spec.func  # type: ignore[assignment]
                    handler(item.message, session)
                    outcomes.append(Outcome.PROCESSED)
                else:
                    outcomes.append(Outcome.DUPLICATE)
            return outcomes

    async def _execute_batch_async(self, run: list[_Item]) -> list[Outcome]:
        from ._dedup import record_messages_async  # noqa: PLC0415 - keeps the sync path's imports small

        async with AsyncSession(self._require_async(), expire_on_commit=False) as session, session.begin():
            fresh = await record_messages_async(
                session,
                self._consumer,
                [(i.message.id, i.message.topic) for i in run],
                attempts=max(i.delivery.deliveries for i in run),
            )
            outcomes = []
            for item in run:
                if str(item.message.id) in fresh:
                    fresh.discard(str(item.message.id))
                    handler: AsyncHandler = item.spec.func  # type: ignore[assignment]
                    await handler(item.message, session)
                    outcomes.append(Outcome.PROCESSED)
                else:
                    outcomes.append(Outcome.DUPLICATE)
            return outcomes
