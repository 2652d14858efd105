"""Handling delivered entries: decode, dedup, run the handler, retry, dead-letter.

One dispatcher per runner. It returns the entry ids that may be
acknowledged: an entry is acknowledged only once its outcome is committed
(effects + inbox row, or a dead letter), never before.

Sync handlers run in a worker thread, one thread hop per batch (not per
message): the per-message transactions, retries and dead letters of a batch
all happen inside that one call, which keeps per-message mode close to the raw
commit rate. ``async def`` handlers run on the event loop (:mod:`._dispatch`).
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import InterfaceError, OperationalError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from brokers import Delivery
from outbox import DecodeError, Envelope, RetryWait, SchemaMissingError, StorageError, decode_entry
from outbox._crashpoints import crash_point
from outbox._dberrors import driver_reason

from . import _metrics as m
from ._config import ConsumerConfig, Mode
from ._dead_letters import insert_dead_letter
from ._dedup import (
    ProcessResult,
    SyncHandler,
    process,
    record_messages,
)
from ._guard import HandlerContractError, HandlerSession, call_sync, guarded
from ._parking import PARKED_ERROR, parked_keys
from ._positions import BatchPositions, record_position
from ._registry import HandlerSpec, Registry, Reject
from ._tracing import process_span
from .tables import inbox

__all__ = ["Item", "SyncDispatcher", "Verdict", "error_text", "is_transient"]

log = structlog.get_logger("inbox")


def is_transient(exc: BaseException) -> bool:
    """Database unavailable, deadlock, serialization failure: retry without counting a delivery."""
    if isinstance(exc, SchemaMissingError):
        return False
    cause = exc.__cause__ if isinstance(exc, StorageError) else exc
    return isinstance(cause, OperationalError | InterfaceError)


def error_text(exc: BaseException) -> str:
    """One line for logs and dead letters, never a statement's SQL or parameters (payload values)."""
    if isinstance(exc, StatementError):  # SQLAlchemy appends "[SQL: ...] [parameters: {...}]"
        return f"{type(exc).__name__}: {driver_reason(exc)}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(slots=True)
class Item:
    delivery: Delivery
    message: Envelope
    spec: HandlerSpec
    retry_at: int = 0  # set when its first attempt failed and its retries were put after the batch


class Verdict(enum.Enum):
    RETRY = "retry"  # counted attempt; retry after a backoff
    TRANSIENT = "transient"  # the database failed, not the handler; retry without counting
    DEAD = "dead"  # out of attempts: dead-letter
    LEAVE = "leave"  # stopping: leave it pending for the partition's next owner


def _subject(delivery: Delivery) -> str | None:
    """The key of an entry (its ``subject`` field), without decoding the whole entry."""
    for name, value in delivery.fields.items():
        if name in ("subject", b"subject"):
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return None


class SyncDispatcher:
    """Decoding, outcomes, dead letters and sync handlers; :class:`Dispatcher` adds the async path."""

    def __init__(
        self,
        registry: Registry,
        config: ConsumerConfig,
        engine: Engine,
        async_engine: AsyncEngine | None,
        *,
        track_positions: bool = False,
    ) -> None:
        self._registry = registry
        # Kafka: positions written with the inbox rows (._positions), one tracker per stream in hand.
        self._track_positions = track_positions
        self._trackers: dict[str, BatchPositions] = {}
        self._config = config
        # No jitter: a message's retries are in-process sleeps of one worker,
        # exactly retry_delay doubling up to max_retry_delay as documented.
        self._retry_wait = RetryWait(base=config.retry_delay, cap=config.max_retry_delay, jitter=False)
        self._engine = engine
        self._async_engine = async_engine
        self._consumer = config.group
        self._all_sync = not any(spec.is_async for spec in registry.specs)
        self._park = config.on_dead_letter == "park-key"
        self._parked: set[str] = set()  # keys behind a dead letter, refreshed per batch (issue #9)

    # -- preparing -------------------------------------------------------------------

    def _prepare_all(self, batch: Sequence[Delivery], stop: threading.Event) -> tuple[list[str], list[Item]]:
        """Decode and route; entries finished here (dead-lettered, ignored) are acknowledged at once."""
        acks: list[str] = []
        items: list[Item] = []
        self._refresh_parked(batch)
        for delivery in batch:
            item, finished = self._prepare(delivery, stop)
            if item is not None and self.parks(item, stop):
                acks.append(delivery.entry_id)
            elif item is not None:
                items.append(item)
            elif finished:
                acks.append(delivery.entry_id)
            else:
                break
        self.finished(batch[0].stream if batch else "", acks)
        return acks, items

    # -- positions (Kafka) -------------------------------------------------------------

    def track(self, batch: Sequence[Delivery]) -> None:
        """Start tracking the positions of ``batch`` (a no-op unless positions are tracked)."""
        if self._track_positions and batch:
            self._trackers[batch[0].stream] = BatchPositions(batch)

    def untrack(self, batch: Sequence[Delivery]) -> None:
        """Stop tracking ``batch``'s stream."""
        if batch:
            self._trackers.pop(batch[0].stream, None)

    def record_position(self, conn: Connection, deliveries: Sequence[Delivery]) -> None:
        """Write, in the caller's transaction, the position once ``deliveries`` are finished."""
        tracker = self._trackers.get(deliveries[0].stream) if deliveries else None
        if tracker is not None:
            position = tracker.after(d.entry_id for d in deliveries)
            record_position(conn, self._consumer, tracker.stream, position)

    def finished(self, stream: str, entry_ids: Sequence[str]) -> None:
        """After the commit: ``entry_ids`` are finished for the positions written later."""
        tracker = self._trackers.get(stream)
        if tracker is not None:
            tracker.finish(entry_ids)

    def _refresh_parked(self, batch: Sequence[Delivery]) -> None:
        """Re-read which keys of the batch wait behind a dead letter (an operator may have released them)."""
        if not self._park:
            return
        texts = {k for d in batch if (k := _subject(d))}
        fresh = parked_keys(self._engine, self._consumer, texts)
        self._parked.difference_update(texts - fresh)
        self._parked.update(fresh)

    def parks(self, item: Item, stop: threading.Event) -> bool:
        """With park-key, record an entry of a key behind a dead letter as parked (True: acknowledge)."""
        key = item.message.key
        if not self._park or key is None or key not in self._parked:
            return False
        return self._dead_letter(item.delivery, item.message, PARKED_ERROR, item.delivery.deliveries, stop)

    def _prepare(self, delivery: Delivery, stop: threading.Event) -> tuple[Item | None, bool]:
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
                self._record_outcome(message, ProcessResult.DUPLICATE, delivery.deliveries, None)
                return None, True
            reason = (
                f"delivered {delivery.deliveries} times without completing"
                f" (over {self._config.poison_deliveries}): its consumers died or lost its partition"
            )
            return None, self._dead_letter(delivery, message, reason, delivery.deliveries, stop)
        return Item(delivery, message, spec), False

    def _already_processed(self, message: Envelope) -> bool:
        query = select(inbox.c.message_id).where(
            inbox.c.consumer == self._consumer, inbox.c.message_id == str(message.id)
        )
        with self._engine.connect() as conn:
            return conn.execute(query).first() is not None

    # -- outcomes --------------------------------------------------------------------

    def _record_outcome(
        self, message: Envelope, outcome: ProcessResult, attempt: int, seconds: float | None
    ) -> None:
        m.MESSAGES.labels(self._consumer, message.topic, outcome.value).inc()
        ids = {"message_id": str(message.id), "topic": message.topic, "consumer": self._consumer}
        if outcome is ProcessResult.DUPLICATE:
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

    def _verdict(self, item: Item, exc: Exception, attempt: int, stop: threading.Event) -> Verdict:
        if isinstance(exc, SchemaMissingError):
            raise exc
        if is_transient(exc):
            log.warning(
                "inbox.storage_unavailable",
                message_id=str(item.message.id),
                consumer=self._consumer,
                error=error_text(exc),
            )
            return Verdict.LEAVE if stop.is_set() else Verdict.TRANSIENT
        final = attempt >= self._config.max_deliveries
        m.FAILURES.labels(self._consumer, item.message.topic).inc()
        log.warning(
            "inbox.handler_failed",
            message_id=str(item.message.id),
            topic=item.message.topic,
            consumer=self._consumer,
            error=error_text(exc),
            attempt=attempt,
            will_retry=not final,
            handler=item.spec.name,
            exc_info=exc,
        )
        if final:
            return Verdict.DEAD
        return Verdict.LEAVE if stop.is_set() else Verdict.RETRY

    def _delay(self, attempt: int) -> float:
        return self._retry_wait.delay(attempt).total_seconds()

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
                    self.record_position(conn, [delivery])
                self.finished(delivery.stream, [delivery.entry_id])
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                log.warning("inbox.storage_unavailable", consumer=self._consumer, error=error_text(exc))
                if stop.wait(self._delay(failures)):
                    return False
        if error == PARKED_ERROR:
            log.info("inbox.message_parked", message_id=str(message.id) if message else None,
                     consumer=self._consumer, stream=delivery.stream, entry_id=delivery.entry_id)  # fmt: skip
            return True
        if self._park and message is not None and message.key is not None:
            self._parked.add(message.key)  # later entries of its key wait (issue #9)
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
        self, items: Sequence[Item], stop: threading.Event, halt: threading.Event
    ) -> list[str]:
        acks: list[str] = []
        later: list[Item] = []  # a failing item and the later items of its key: after the others
        waiting: set[str] = set()
        for item in items:
            key = item.message.key
            if key is not None and key in waiting:
                later.append(item)
                continue
            if halt.is_set() or not self._handle_one_sync(item, stop, defer=key is not None):
                return acks  # this and the later entries stay pending for the partition's next owner
            if item.retry_at:
                waiting.add(key)  # type: ignore[arg-type]
                later.append(item)
                continue
            acks.append(item.delivery.entry_id)
        for item in later:
            if halt.is_set() or not self._handle_one_sync(item, stop):
                break
            acks.append(item.delivery.entry_id)
        return acks

    def _handle_one_sync(self, item: Item, stop: threading.Event, *, defer: bool = False) -> bool:
        """Process with retries; True when finished (committed or dead-lettered).

        With ``defer``, a first attempt that fails and may be retried sets
        ``item.retry_at`` and returns True: its retries come after the other
        keys of the batch, so a failing message holds up only its key (issue #9).
        """
        if self.parks(item, stop):
            return True
        attempt = item.retry_at or item.delivery.deliveries
        if item.retry_at:
            stop.wait(self._delay(attempt - 1))
            item.retry_at = 0
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
                final = isinstance(exc, HandlerContractError)  # retrying cannot fix it
                verdict = self._verdict(item, exc, self._config.max_deliveries if final else attempt, stop)
                if verdict is Verdict.DEAD:
                    return self._dead_letter(item.delivery, item.message, error_text(exc), attempt, stop)
                if verdict is Verdict.LEAVE:
                    return False
                if verdict is Verdict.TRANSIENT:
                    transient += 1
                    stop.wait(self._delay(transient))
                    continue
                if defer:
                    item.retry_at = attempt + 1
                    return True
                stop.wait(self._delay(attempt))
                attempt += 1
                continue
            self._record_outcome(item.message, outcome, attempt, time.perf_counter() - started)
            return True

    def _execute_sync(self, item: Item, attempt: int) -> ProcessResult:
        with (
            structlog.contextvars.bound_contextvars(
                message_id=str(item.message.id), correlation_id=item.message.correlation_id
            ),
            process_span(item.message, consumer=self._consumer, stream=item.delivery.stream, attempt=attempt),
            HandlerSession(self._engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            handler: SyncHandler = item.spec.func  # type: ignore[assignment]
            outcome = process(session, self._consumer, item.message, handler, attempts=attempt)
            self.record_position(session.connection(), [item.delivery])
            crash_point("inbox.after_handler")
        self.finished(item.delivery.stream, [item.delivery.entry_id])
        crash_point("inbox.after_commit")
        return outcome

    def _span(self, item: Item) -> contextlib.AbstractContextManager[None]:
        """The ``process`` span of one message of a batch (docs/tracing.md)."""
        return process_span(
            item.message,
            consumer=self._consumer,
            stream=item.delivery.stream,
            attempt=item.delivery.deliveries,
        )

    def _batch_sync(self, items: list[Item], stop: threading.Event, halt: threading.Event) -> list[str]:
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

    def _batch_failed(self, items: list[Item], exc: Exception) -> list[str]:
        # One failure rolls the whole batch back; it is redone one message at a
        # time, so the failing message is retried and dead-lettered alone and
        # the others commit on their own.
        log.warning(
            "inbox.batch_failed",
            consumer=self._consumer,
            stream=items[0].delivery.stream,
            batch_size=len(items),
            error=error_text(exc),
        )
        return []

    def _batch_done(self, items: list[Item], outcomes: list[ProcessResult], seconds: float) -> None:
        for item, outcome in zip(items, outcomes, strict=True):
            self._record_outcome(item.message, outcome, item.delivery.deliveries, None)
        m.HANDLER_SECONDS.labels(self._consumer, items[0].message.topic).observe(seconds / len(items))
        log.info(
            "inbox.batch_handled",
            consumer=self._consumer,
            stream=items[0].delivery.stream,
            batch_size=len(items),
            processed=sum(o is ProcessResult.PROCESSED for o in outcomes),
            duration_ms=round(seconds * 1000, 3),
        )

    def _execute_batch_sync(self, items: list[Item]) -> list[ProcessResult]:
        with HandlerSession(self._engine, expire_on_commit=False) as session, session.begin():
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
                    with guarded(session.info), self._span(item):
                        call_sync(handler, item.message, session, item.spec.name)
                    outcomes.append(ProcessResult.PROCESSED)
                else:
                    outcomes.append(ProcessResult.DUPLICATE)
            self.record_position(session.connection(), [i.delivery for i in items])
            crash_point("inbox.after_handler")
        self.finished(items[0].delivery.stream, [i.delivery.entry_id for i in items])
        crash_point("inbox.after_commit")
        return outcomes
