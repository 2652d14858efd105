"""Helpers for the saga tests: an order saga, reading the outbox as envelopes, driving transitions."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

import outbox
import saga
from outbox import Envelope
from saga import Command, Local, RetryPolicy, SagaContext, SagaDefinition, Step, StepFailed

INVENTORY = "inventory.commands"
PAYMENT = "payment.commands"
REPLIES = "orders.saga.replies"
TIMERS = "orders.saga.timers"
TIMEOUT = dt.timedelta(seconds=30)

domain = sa.MetaData()
orders = sa.Table(
    "test_orders",
    domain,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(32), nullable=False),
)


def create_order(session: Session, ctx: SagaContext) -> dict[str, Any]:
    session.execute(sa.insert(orders).values(id=str(ctx.data["order_id"]), status="pending"))
    return {"order_status": "pending"}


def cancel_order(session: Session, ctx: SagaContext) -> None:
    session.execute(sa.update(orders).where(orders.c.id == ctx.data["order_id"]).values(status="cancelled"))


def approve_order(session: Session, ctx: SagaContext) -> dict[str, Any]:
    session.execute(sa.update(orders).where(orders.c.id == ctx.data["order_id"]).values(status="approved"))
    return {"order_status": "approved"}


def order_saga(
    *,
    charge_retry: RetryPolicy | None = None,
    approve: Callable[[Session, SagaContext], Mapping[str, Any] | None] = approve_order,
    approve_retry: RetryPolicy | None = None,
    cancel: Callable[[Session, SagaContext], Mapping[str, Any] | None] = cancel_order,
) -> SagaDefinition:
    """create_order (local) -> reserve_stock (inventory) -> charge_payment (payment) -> approve_order (local)."""
    return SagaDefinition(
        name="order",
        steps=[
            Step(name="create_order", action=Local(create_order), compensation=Local(cancel)),
            Step(
                name="reserve_stock",
                action=Command(
                    topic=INVENTORY, type="ReserveStock", payload=lambda c: {"sku": c.data["sku"]}
                ),
                compensation=Command(
                    topic=INVENTORY, type="ReleaseStock", payload=lambda c: {"sku": c.data["sku"]}
                ),
                timeout=TIMEOUT,
            ),
            Step(
                name="charge_payment",
                action=Command(
                    topic=PAYMENT, type="ChargePayment", payload=lambda c: {"amount": c.data["amount"]}
                ),
                compensation=Command(
                    topic=PAYMENT,
                    type="RefundPayment",
                    payload=lambda c: {"payment_id": c.data.get("payment_id")},
                ),
                timeout=TIMEOUT,
                retry=charge_retry or RetryPolicy(),
            ),
            Step(name="approve_order", action=Local(approve), retry=approve_retry or RetryPolicy()),
        ],
    )


def orchestrator(definition: SagaDefinition | None = None) -> saga.Orchestrator:
    return saga.Orchestrator([definition or order_saga()], reply_topic=REPLIES, timer_topic=TIMERS)


def make_engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    domain.create_all(engine)
    return engine


def _doc(value: object) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def messages(engine: sa.Engine, topic: str | None = None) -> list[Envelope]:
    """The outbox rows (published or not) as envelopes, oldest first."""
    table = outbox.outbox_tables().outbox
    query = sa.select(table).order_by(table.c.id)
    if topic is not None:
        query = query.where(table.c.topic == topic)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        Envelope(
            id=row["message_id"],
            topic=row["topic"],
            type=row["type"],
            source=row["source"],
            key=row["key"],
            time=_aware(row["created_at"]),
            headers=_doc(row["headers"]),
            payload=_doc(row["payload"]),
        )
        for row in rows
    ]


def available_at(engine: sa.Engine, message_id: uuid.UUID) -> dt.datetime:
    table = outbox.outbox_tables().outbox
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(table.c.available_at).where(table.c.message_id == message_id)
        ).scalar_one()
    return _aware(value)


def last(engine: sa.Engine, topic: str, of_type: str | None = None) -> Envelope:
    found = [m for m in messages(engine, topic) if of_type is None or m.type == of_type]
    assert found, f"no message on {topic} ({of_type})"
    return found[-1]


def start(engine: sa.Engine, orch: saga.Orchestrator, **data: Any) -> uuid.UUID:
    data.setdefault("order_id", f"o-{uuid.uuid4().hex[:8]}")
    data.setdefault("sku", "sku-1")
    data.setdefault("amount", "9.90")
    with Session(engine) as session, session.begin():
        return orch.start(session, "order", data)


def answer(
    engine: sa.Engine,
    command: Envelope,
    *,
    ok: bool = True,
    data: Mapping[str, Any] | None = None,
    reason: str | None = None,
) -> Envelope:
    """The participant's side: reply through the outbox in its own transaction; return the reply."""
    with Session(engine) as session, session.begin():
        reply_id = saga.reply(session, command, ok=ok, data=data, reason=reason)
    (found,) = [m for m in messages(engine, command.headers["reply_to"]) if m.id == reply_id]
    return found


def deliver(engine: sa.Engine, orch: saga.Orchestrator, message: Envelope) -> saga.HandlingResult:
    """The orchestrator's consumer: handle a reply or a timer in one committed transaction."""
    with Session(engine) as session, session.begin():
        if message.topic == orch.timer_topic:
            return orch.handle_timer(session, message)
        return orch.handle_reply(session, message)


def timer(engine: sa.Engine, saga_id: uuid.UUID, name: str = saga.TIMEOUT_TIMER) -> Envelope:
    """The pending timer message ``name`` of the saga (it must be pending)."""
    with engine.connect() as conn:
        message_id = conn.execute(
            sa.select(saga.tables.saga_timer.c.message_id).where(
                saga.tables.saga_timer.c.saga_id == saga_id, saga.tables.saga_timer.c.name == name
            )
        ).scalar_one()
    (found,) = [m for m in messages(engine, TIMERS) if m.id == message_id]
    return found


def instance(engine: sa.Engine, saga_id: uuid.UUID) -> saga.SagaInstance:
    with engine.connect() as conn:
        found = saga.select_saga(conn, saga_id)
    assert found is not None
    return found


def kinds(engine: sa.Engine, saga_id: uuid.UUID) -> list[tuple[str, int | None]]:
    """The step log as (kind, step) pairs."""
    with engine.connect() as conn:
        return [(e.kind.value, e.step) for e in saga.select_step_log(conn, saga_id)]


def order_status(engine: sa.Engine, order_id: str) -> str | None:
    with engine.connect() as conn:
        value: str | None = conn.execute(sa.select(orders.c.status).where(orders.c.id == order_id)).scalar()
    return value


def timers(engine: sa.Engine) -> list[tuple[uuid.UUID, str]]:
    t = saga.tables.saga_timer
    with engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(sa.select(t.c.saga_id, t.c.name))]


def fail_always(session: Session, ctx: SagaContext) -> None:
    raise StepFailed("approval refused")
