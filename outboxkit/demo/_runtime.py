"""Run the three services in one process: a relay thread and a consumer runner per service.

The relays run in threads (``Relay.run`` is a blocking loop); the consumer
runners share the caller's asyncio loop. One planned fault: a relay that
"crashes" (its thread dies by an exception) right after the broker accepted a
batch and before the rows were marked as published. Its restart publishes the
batch again, and the consumers' inboxes recognise the duplicates.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import structlog

from brokers import (
    Fence,
    OutgoingEntry,
    Publisher,
    PublishResult,
    StreamLayout,
    connect_publisher,
    connect_subscriber,
)
from inbox import ConsumerConfig, ConsumerRunner, Registry
from outbox import Envelope, decode_entry
from outbox.tables import outbox_tables
from outboxkit.demo import SERVICES, Service
from relay import Relay, RelayConfig

__all__ = ["CrashPlan", "Services"]

log = structlog.get_logger("outboxkit.demo")

_POLL = dt.timedelta(milliseconds=50)
_RESTART_PAUSE_S = 0.6


class RelayCrashError(Exception):
    """The simulated crash: raised between publish and mark, it kills the relay's loop."""


@dataclass(kw_only=True)
class CrashPlan:
    """Crash ``service``'s relay once, on the first batch that carries a message of ``order_id``."""

    service: str
    order_id: str
    fired: bool = False
    crashed_batch: list[Envelope] = field(default_factory=list)


class _CrashOncePublisher:
    """A publisher that, once, raises after the broker accepted the batch (before the relay marks it)."""

    def __init__(self, inner: Publisher, plan: CrashPlan) -> None:
        self._inner = inner
        self._plan = plan

    @property
    def description(self) -> str:
        return self._inner.description

    def publish(
        self,
        entries: Sequence[OutgoingEntry],
        *,
        fences: Sequence[Fence] = (),
        incarnation: str | None = None,
    ) -> PublishResult:
        result = self._inner.publish(entries, fences=fences, incarnation=incarnation)
        if not self._plan.fired and entries:
            batch = [decode_entry(_fields(e)) for e in entries]
            if any(m.correlation_id == self._plan.order_id for m in batch):
                self._plan.fired = True
                self._plan.crashed_batch = batch
                raise RelayCrashError
        return result

    def ping(self) -> None:
        self._inner.ping()

    def close(self) -> None:
        self._inner.close()


@dataclass(kw_only=True)
class Services:
    """The three services of a run: database URLs by service, one broker, handlers by service."""

    urls: Mapping[str, str]
    broker: str
    prefix: str
    registries: Mapping[str, Registry]
    crash: CrashPlan | None = None
    _relays: dict[str, Relay] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)
    _runners: list[ConsumerRunner] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[BaseException] = field(default_factory=list)

    @property
    def layout(self) -> StreamLayout:
        return StreamLayout(prefix=self.prefix)

    # -- relays ----------------------------------------------------------------------

    def start_relays(self) -> None:
        for service in SERVICES:
            thread = threading.Thread(
                target=self._relay_loop, args=(service,), name=f"relay-{service.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _new_relay(self, service: Service) -> Relay:
        config = RelayConfig(
            database_url=self.urls[service.name],
            broker_url=self.broker,
            outbox=service.outbox,
            layout=self.layout,
            poll_interval=_POLL,
            relay_id=f"demo-{service.name}-{time.monotonic_ns() % 10**9}",
        )
        publisher: Publisher = connect_publisher(self.broker, key_prefix=self.prefix)
        if self.crash is not None and self.crash.service == service.name and not self.crash.fired:
            publisher = _CrashOncePublisher(publisher, self.crash)
        return Relay(config, publisher=publisher)

    def _relay_loop(self, service: Service) -> None:
        while not self._stopping.is_set():
            relay = self._new_relay(service)
            with self._lock:
                self._relays[service.name] = relay
                if self._stopping.is_set():
                    relay.stop()
            try:
                relay.run()
            except RelayCrashError:
                self._report_crash(service)
                self._stopping.wait(_RESTART_PAUSE_S)
                if not self._stopping.is_set():
                    text = "restarted: publishes again what it had not marked as sent"
                    log.info("demo.relay_restarted", service=service.name, text=text, tone="info")
                continue
            except Exception as exc:  # noqa: BLE001 - reported by the command, which fails the run
                self.errors.append(exc)
                log.error("demo.relay_failed", service=service.name, text=str(exc), tone="fail")  # noqa: TRY400
            return

    def _report_crash(self, service: Service) -> None:
        batch = self.crash.crashed_batch if self.crash is not None else []
        what = ", ".join(f"#{m.correlation_id} {m.type}" for m in batch)
        many = len(batch) > 1
        text = (
            f"crashed after the broker took {len(batch)} message{'s' if many else ''} ({what}),"
            f" before marking {'them' if many else 'it'} as sent"
        )
        log.warning(
            "demo.relay_crashed",
            service=service.name,
            text=text,
            tone="fail",
            message_ids=[str(m.id) for m in batch],
            order_ids=[m.correlation_id for m in batch],
        )

    # -- consumers -------------------------------------------------------------------

    def consumer_tasks(self) -> list[asyncio.Task[None]]:
        tasks = []
        for service in SERVICES:
            config = ConsumerConfig(
                group=service.group,
                consumer_name=f"{service.group}-1",
                layout=self.layout,
                block=dt.timedelta(milliseconds=200),
                retry_delay=dt.timedelta(milliseconds=100),
            )
            runner = ConsumerRunner(
                self.registries[service.name],
                db=self.urls[service.name],
                subscriber=connect_subscriber(self.broker),
                config=config,
            )
            self._runners.append(runner)
            tasks.append(asyncio.create_task(runner.run(), name=f"consumer-{service.name}"))
        return tasks

    # -- settling and stopping ---------------------------------------------------------

    async def settled(self, engines: Mapping[str, sa.Engine]) -> bool:
        """No due message left in any outbox, nothing pending or unread in any consumer group."""
        now = dt.datetime.now(dt.UTC)
        for service in SERVICES:
            o = outbox_tables(service.outbox).outbox
            query = sa.select(sa.func.count()).where(o.c.published_at.is_(None), o.c.available_at <= now)
            if await asyncio.to_thread(_scalar, engines[service.name], query):
                return False
        for runner in self._runners:
            for stream in runner.streams:
                status = await runner.subscriber.group_status(stream, runner.config.group)
                if status is not None and (status.lag is None or status.lag > 0):
                    return False
        return True

    async def stop(self, tasks: Sequence[asyncio.Task[None]]) -> None:
        self._stopping.set()
        with self._lock:
            for relay in self._relays.values():
                relay.stop()
        for runner in self._runners:
            runner.stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        self.errors.extend(r for r in results if isinstance(r, BaseException))
        for runner in self._runners:
            await runner.aclose()
        await asyncio.to_thread(_join_all, self._threads)


def _fields(entry: OutgoingEntry) -> dict[bytes | str, bytes | str]:
    fields: dict[bytes | str, bytes | str] = {}
    fields.update(entry.fields)
    return fields


def _scalar(engine: sa.Engine, query: sa.Select[Any]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def _join_all(threads: Sequence[threading.Thread]) -> None:
    for thread in threads:
        thread.join(timeout=30)
