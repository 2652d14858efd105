"""One demo run: prepare the databases, start the services, place the orders, wait, check."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from brokers.sql_table import configure_sqlite
from outboxkit.demo import (
    INVENTORY,
    ORDER,
    PAYMENT,
    SERVICES,
    Check,
    Faults,
    OrderRow,
    OrderSpec,
    Scenario,
    Style,
    check_consistency,
    choreographed_registries,
    initial_stock,
    make_orchestrator,
    orchestrated_registries,
    order_saga,
    place_order,
    place_order_choreographed,
    prepare_databases,
    seed_stock,
    select_orders,
)

from ._report import saga_errors, saga_ids
from ._runtime import CrashPlan, Services
from ._workspace import Workspace

__all__ = ["DemoRun", "Result"]

_SETTLE_CHECKS = 3  # consecutive quiet checks before the run is over
_TICK_S = 0.1


@dataclass(frozen=True, kw_only=True, slots=True)
class Result:
    """What a run found."""

    checks: list[Check]
    rows: list[OrderRow]
    reasons: dict[str, str]
    sagas: dict[str, str]
    timed_out: bool
    errors: list[str]


@dataclass(kw_only=True)
class DemoRun:
    """The parameters of a run."""

    specs: Sequence[OrderSpec]
    style: Style
    ws: Workspace
    faults: Faults
    timeout: dt.timedelta
    step_timeout: dt.timedelta
    pace: dt.timedelta

    def __post_init__(self) -> None:
        self.engines = {s.name: _engine(self.ws.urls[s.name]) for s in SERVICES}
        self.orchestrator = make_orchestrator(order_saga(timeout=self.step_timeout))

    async def run(self, on_ready: Callable[[], None] | None = None) -> Result:
        """Run the orders to their end (or the timeout), then check the databases."""
        await asyncio.to_thread(self._prepare)
        if on_ready is not None:
            on_ready()
        registries = (
            orchestrated_registries(self.orchestrator, self.faults)
            if self.style is Style.ORCHESTRATED
            else choreographed_registries(self.faults)
        )
        crash = next((s for s in self.specs if s.scenario is Scenario.RELAY_CRASH), None)
        services = Services(
            urls=self.ws.urls,
            broker=self.ws.broker,
            prefix=self.ws.prefix,
            registries=registries,
            crash=None if crash is None else CrashPlan(service=PAYMENT.name, order_id=crash.order_id),
        )
        services.start_relays()
        tasks = services.consumer_tasks()
        try:
            await self._place_all()
            timed_out = not await self._wait(services, tasks)
        finally:
            await services.stop(tasks)
        checks = await asyncio.to_thread(self._check)
        rows = await asyncio.to_thread(select_orders, self.engines[ORDER.name])
        reasons = await asyncio.to_thread(saga_errors, self.engines[ORDER.name])
        sagas = await asyncio.to_thread(saga_ids, self.engines[ORDER.name])
        for engine in self.engines.values():
            engine.dispose()
        errors = [_describe(e) for e in services.errors]
        return Result(
            checks=checks, rows=rows, reasons=reasons, sagas=sagas, timed_out=timed_out, errors=errors
        )

    def _prepare(self) -> None:
        prepare_databases(self.ws.urls)
        # SQLite: switch every file to WAL now, while nothing else has it open
        # (the switch fails with "database is locked" beside other connections).
        for url in [*self.ws.urls.values(), self.ws.broker]:
            if url.startswith("sqlite"):
                engine = _engine(url)
                with engine.connect():
                    pass
                engine.dispose()
        seed_stock(self.engines[INVENTORY.name], initial_stock(len(self.specs)))

    async def _place_all(self) -> None:
        for index, spec in enumerate(self.specs):
            if index:
                await asyncio.sleep(self.pace.total_seconds())
            await asyncio.to_thread(self._place, spec)

    def _place(self, spec: OrderSpec) -> None:
        with Session(self.engines[ORDER.name]) as session, session.begin():
            if self.style is Style.ORCHESTRATED:
                place_order(session, self.orchestrator, spec)
            else:
                place_order_choreographed(session, spec, deadline=self.step_timeout * 2)

    async def _wait(self, services: Services, consumers: Sequence[asyncio.Task[None]]) -> bool:
        """Until every order is decided and every message handled; False on timeout or a dead service."""
        deadline = time.monotonic() + self.timeout.total_seconds()
        quiet = 0
        while time.monotonic() < deadline and not services.errors and not any(t.done() for t in consumers):
            await asyncio.sleep(_TICK_S)
            decided = await asyncio.to_thread(self._all_decided)
            quiet = quiet + 1 if decided and await services.settled(self.engines) else 0
            if quiet >= _SETTLE_CHECKS:
                return True
        return False

    def _all_decided(self) -> bool:
        rows = select_orders(self.engines[ORDER.name])
        return len(rows) == len(self.specs) and all(r.status != "pending" for r in rows)

    def _check(self) -> list[Check]:
        checks = check_consistency(
            self.engines[ORDER.name],
            self.engines[INVENTORY.name],
            self.engines[PAYMENT.name],
            expected_orders=len(self.specs),
            sagas=self.style is Style.ORCHESTRATED,
        )
        statuses = {r.order_id: r.status for r in select_orders(self.engines[ORDER.name])}
        wrong = [s.order_id for s in self.specs if statuses.get(s.order_id) != s.scenario.expected_status]
        detail = "all as planned" if not wrong else "not as planned: " + ", ".join(f"#{w}" for w in wrong)
        checks.append(Check(name="each order ended as the business rules say", ok=not wrong, detail=detail))
        return checks


def _engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        configure_sqlite(engine)
    return engine


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    if error.__cause__ is not None:
        text += f" ({type(error.__cause__).__name__}: {error.__cause__})"
    return text
