"""Type-checked by mypy (not run): realistic use of the saga API."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping

from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import saga
from outbox import Envelope, JSONValue, publish


def reserve_payload(ctx: saga.SagaContext) -> JSONValue:
    return {"order_id": ctx.data["order_id"], "attempt": ctx.attempt}


def approve(session: Session, ctx: saga.SagaContext) -> Mapping[str, JSONValue] | None:
    if ctx.data.get("fraud"):
        raise saga.StepFailed("fraud check failed")
    return {"approved": True}


ORDER = saga.SagaDefinition(
    name="order",
    steps=[
        saga.Step(
            name="reserve",
            action=saga.Command(topic="inventory.commands", type="ReserveStock", payload=reserve_payload),
            compensation=saga.Command(
                topic="inventory.commands", type="ReleaseStock", payload=reserve_payload
            ),
            timeout=dt.timedelta(seconds=30),
            retry=saga.RetryPolicy(max_attempts=3, backoff=dt.timedelta(seconds=2)),
        ),
        saga.Step(name="approve", action=saga.Local(approve)),
    ],
)
orchestrator = saga.Orchestrator([ORDER], reply_topic="orders.saga.replies", timer_topic="orders.saga.timers")


def orchestrate(command: Envelope) -> tuple[uuid.UUID, saga.HandlingResult, list[saga.SagaCount]]:
    engine = create_engine("sqlite://")
    with Session(engine) as session, session.begin():
        saga_id = orchestrator.start(session, "order", {"order_id": "o-1"}, cause=command)
        outcome = orchestrator.handle_reply(session, command)
        orchestrator.handle_timer(session, command)
        entries: list[saga.StepLogEntry] = saga.select_step_log(session, saga_id)
        found: saga.SagaInstance | None = saga.select_saga(session, saga_id)
        del entries, found
        return saga_id, outcome, saga.count_sagas(session)


def participant(command: Envelope, session: Session) -> None:
    reply_id: uuid.UUID = saga.reply(session, command, ok=False, reason="out of stock")
    publish(session, "inventory.events", {"sku": "s"}, headers=saga.follow_up_headers(command))
    del reply_id


async def async_participant(command: Envelope, session: AsyncSession) -> uuid.UUID:
    return await saga.reply(session, command, ok=True, data={"reservation": "r-1"})


async def async_orchestrate(session: AsyncSession, reply: Envelope) -> saga.HandlingResult:
    return await session.run_sync(orchestrator.handle_reply, reply)


def charge(session: Session, command: Envelope) -> Mapping[str, JSONValue] | None:
    return {"payment_id": "p-1"}


def payment_commands(message: Envelope, session: Session) -> None:
    decision: saga.Decision = saga.participate(session, message, charge)
    del decision


def operate(session: Session, saga_id: uuid.UUID) -> list[saga.SagaInstance]:
    """Operator actions (issue 14): list stuck sagas, retry one, abort another."""
    stuck = saga.select_sagas(session, state=saga.SagaState.COMPENSATING, older_than=dt.timedelta(minutes=10))
    retry_id: uuid.UUID = saga.request_retry(
        session, saga_id, by="alice", timer_topic=orchestrator.timer_topic
    )
    saga.request_abort(session, saga_id, by="alice", timer_topic=orchestrator.timer_topic)
    why: str | None = saga.refusal(stuck[0], saga.OperatorAction.ABORT) if stuck else None
    del retry_id, why
    return stuck
