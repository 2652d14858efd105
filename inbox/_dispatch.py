"""The dispatcher: sync registries in one worker-thread call per batch, async handlers on the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from brokers import Delivery
from outbox import SchemaMissingError, StorageError
from outbox._crashpoints import crash_point

from ._config import Mode
from ._dedup import AsyncHandler, Outcome, process_async, record_messages_async
from ._guard import HandlerContractError, HandlerSession, guarded
from ._handling import Item, SyncDispatcher, Verdict, error_text
from ._registry import Reject

__all__ = ["Dispatcher"]


class Dispatcher(SyncDispatcher):
    """Runs registered handlers on delivered entries, per message or per batch."""

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

    async def _runs_mixed(self, items: list[Item], stop: threading.Event, halt: threading.Event) -> list[str]:
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
        self, items: list[Item], stop: threading.Event, halt: threading.Event
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

    async def _execute_batch_async(self, items: list[Item]) -> list[Outcome]:
        if self._async_engine is None:  # pragma: no cover - the runner creates it for async handlers
            msg = "async handlers need an async engine"
            raise StorageError(msg)
        async with (
            AsyncSession(
                self._async_engine, expire_on_commit=False, sync_session_class=HandlerSession
            ) as session,
            session.begin(),
        ):
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
                    with guarded(session.info):
                        await handler(item.message, session)
                    outcomes.append(Outcome.PROCESSED)
                else:
                    outcomes.append(Outcome.DUPLICATE)
            return outcomes

    async def _handle_one_async(self, item: Item, stop: threading.Event) -> bool:
        if item.message.key in self._parked and await asyncio.to_thread(self.parks, item, stop):
            return True
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
                final = isinstance(exc, HandlerContractError)  # retrying cannot fix it
                verdict = self._verdict(item, exc, self._config.max_deliveries if final else attempt, stop)
                if verdict is Verdict.DEAD:
                    error = error_text(exc)
                    return await asyncio.to_thread(
                        self._dead_letter, item.delivery, item.message, error, attempt, stop
                    )
                if verdict is Verdict.LEAVE:
                    return False
                if verdict is Verdict.TRANSIENT:
                    transient += 1
                    await _wait(stop, self._delay(transient))
                    continue
                await _wait(stop, self._delay(attempt))
                attempt += 1
                continue
            self._record_outcome(item.message, outcome, attempt, time.perf_counter() - started)
            return True

    async def _execute_async(self, item: Item, attempt: int) -> Outcome:
        if self._async_engine is None:  # pragma: no cover - the runner creates it for async handlers
            msg = "async handlers need an async engine"
            raise StorageError(msg)
        with structlog.contextvars.bound_contextvars(
            message_id=str(item.message.id), correlation_id=item.message.correlation_id
        ):
            async with (
                AsyncSession(
                    self._async_engine, expire_on_commit=False, sync_session_class=HandlerSession
                ) as session,
                session.begin(),
            ):
                handler: AsyncHandler = item.spec.func  # type: ignore[assignment]
                outcome = await process_async(
                    session, self._consumer, item.message, handler, attempts=attempt
                )
                crash_point("inbox.after_handler")
            crash_point("inbox.after_commit")
            return outcome


async def _wait(stop: threading.Event, seconds: float) -> None:
    """Sleep up to ``seconds``, waking early when ``stop`` is set."""
    deadline = time.monotonic() + seconds
    # A threading.Event shared with worker threads cannot be awaited: poll it.
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:  # noqa: ASYNC110
        await asyncio.sleep(min(left, 0.05))
