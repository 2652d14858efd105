"""The order saga, orchestrated: the order service runs a :class:`saga.Orchestrator`.

create order (local) → reserve stock (inventory) → charge payment (payment) →
confirm order (local); compensations: cancel order, release stock, refund.
The inventory and payment services answer each command with :func:`saga.reply`
in the transaction of its effects.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.orm import Session

import inbox
from outbox import Envelope, JSONValue
from saga import (
    Command,
    Local,
    Orchestrator,
    RetryPolicy,
    SagaContext,
    SagaDefinition,
    Step,
    register,
    reply,
)

from ._events import emit, money
from ._participants import Charge, Faults, charge, refund, release_stock, reserve_stock
from ._scenario import OrderSpec
from ._tables import INVENTORY, ORDER, PAYMENT, demo_order

__all__ = [
    "INVENTORY_COMMANDS",
    "PAYMENT_COMMANDS",
    "REPLY_TOPIC",
    "TIMER_TOPIC",
    "make_orchestrator",
    "orchestrated_registries",
    "order_saga",
    "place_order",
]

INVENTORY_COMMANDS = "inventory.commands"
PAYMENT_COMMANDS = "payment.commands"
REPLY_TOPIC = "orders.saga.replies"
TIMER_TOPIC = "orders.saga.timers"
SAGA_TYPE = "order"


def _create_order(session: Session, ctx: SagaContext) -> None:
    d = ctx.data
    session.execute(
        sa.insert(demo_order).values(
            id=d["order_id"], customer=d["customer"], sku=d["sku"], qty=d["qty"],
            amount=d["amount"], card=d["card"], status="pending",
        )
    )  # fmt: skip
    emit(session, "order_placed", service="order", order_id=str(d["order_id"]),
         text=f"{d['customer']} orders {d['qty']} x {d['sku']} for {money(int(str(d['amount'])))}",
         tone="info")  # fmt: skip


def _cancel_order(session: Session, ctx: SagaContext) -> None:
    order_id = str(ctx.data["order_id"])
    done = (
        session.connection()
        .execute(
            sa.update(demo_order)
            .where(demo_order.c.id == order_id, demo_order.c.status == "pending")
            .values(status="cancelled", reason="saga compensated")
        )
        .rowcount
    )
    if done:
        emit(
            session,
            "order_cancelled",
            service="order",
            order_id=order_id,
            text="order cancelled",
            tone="undo",
        )


def _confirm_order(session: Session, ctx: SagaContext) -> None:
    order_id = str(ctx.data["order_id"])
    session.execute(
        sa.update(demo_order)
        .where(demo_order.c.id == order_id, demo_order.c.status == "pending")
        .values(status="confirmed")
    )
    emit(session, "order_confirmed", service="order", order_id=order_id, text="confirmed", tone="ok")


def _stock(ctx: SagaContext) -> JSONValue:
    return {"order_id": ctx.data["order_id"], "sku": ctx.data["sku"], "qty": ctx.data["qty"]}


def _payment(ctx: SagaContext) -> JSONValue:
    keys = ("order_id", "customer", "amount", "card")
    return {key: ctx.data[key] for key in keys}


def order_saga(
    *, timeout: dt.timedelta = dt.timedelta(seconds=30), charge_attempts: int = 2
) -> SagaDefinition:
    """The saga type ``order``; ``timeout`` bounds the wait for each participant's reply."""
    retry = RetryPolicy(max_attempts=charge_attempts, backoff=min(timeout / 4, dt.timedelta(seconds=1)))
    return SagaDefinition(
        name=SAGA_TYPE,
        steps=[
            Step(name="create_order", action=Local(_create_order), compensation=Local(_cancel_order)),
            Step(
                name="reserve_stock",
                action=Command(topic=INVENTORY_COMMANDS, type="ReserveStock", payload=_stock),
                compensation=Command(topic=INVENTORY_COMMANDS, type="ReleaseStock", payload=_stock),
                timeout=timeout,
                retry=retry,  # a resent ReserveStock is harmless: one reservation per order
            ),
            Step(
                name="charge_payment",
                action=Command(topic=PAYMENT_COMMANDS, type="ChargePayment", payload=_payment),
                compensation=Command(topic=PAYMENT_COMMANDS, type="RefundPayment", payload=_payment),
                timeout=timeout,
                retry=retry,
            ),
            Step(name="confirm_order", action=Local(_confirm_order)),
        ],
    )


def make_orchestrator(definition: SagaDefinition | None = None) -> Orchestrator:
    """The order service's orchestrator, writing to the order service's outbox."""
    return Orchestrator(
        [definition or order_saga()],
        reply_topic=REPLY_TOPIC,
        timer_topic=TIMER_TOPIC,
        outbox_config=ORDER.outbox,
    )


def place_order(session: Session, orchestrator: Orchestrator, spec: OrderSpec) -> uuid.UUID:
    """Start the saga, which creates the order, in the caller's transaction (the order service's API)."""
    data: Mapping[str, JSONValue] = {
        "order_id": spec.order_id,
        "customer": spec.customer,
        "sku": spec.sku,
        "qty": spec.qty,
        "amount": spec.amount,
        "card": spec.card,
    }
    return orchestrator.start(session, SAGA_TYPE, data, correlation_id=spec.order_id)


def _inventory_registry(faults: Faults) -> inbox.Registry:
    registry = inbox.Registry()

    @registry.handler(INVENTORY_COMMANDS, types="ReserveStock")
    def on_reserve(message: Envelope, session: Session) -> None:
        p = _fields(message)
        refused = reserve_stock(session, str(p["order_id"]), str(p["sku"]), int(str(p["qty"])))
        reply(session, message, ok=refused is None, reason=refused, config=INVENTORY.outbox)

    @registry.handler(INVENTORY_COMMANDS, types="ReleaseStock")
    def on_release(message: Envelope, session: Session) -> None:
        release_stock(session, str(_fields(message)["order_id"]), faults)
        reply(session, message, ok=True, config=INVENTORY.outbox)

    return registry


def _payment_registry(faults: Faults) -> inbox.Registry:
    registry = inbox.Registry()

    @registry.handler(PAYMENT_COMMANDS, types="ChargePayment")
    def on_charge(message: Envelope, session: Session) -> None:
        p = _fields(message)
        outcome = charge(
            session, str(p["order_id"]), str(p["customer"]), int(str(p["amount"])), str(p["card"])
        )
        if outcome is Charge.UNANSWERED:
            return  # the provider's answer is lost: the orchestrator's timeout will notice
        ok = outcome is Charge.CHARGED
        reason = None if ok else f"payment {outcome.value}"
        reply(session, message, ok=ok, reason=reason, config=PAYMENT.outbox)

    @registry.handler(PAYMENT_COMMANDS, types="RefundPayment")
    def on_refund(message: Envelope, session: Session) -> None:
        refund(session, str(_fields(message)["order_id"]), faults)
        reply(session, message, ok=True, config=PAYMENT.outbox)

    return registry


def orchestrated_registries(
    orchestrator: Orchestrator, faults: Faults | None = None
) -> dict[str, inbox.Registry]:
    """The handlers of each service, by service name."""
    orders = inbox.Registry()
    register(orders, orchestrator)
    faults = faults or Faults()
    return {
        ORDER.name: orders,
        INVENTORY.name: _inventory_registry(faults),
        PAYMENT.name: _payment_registry(faults),
    }


def _fields(message: Envelope) -> Mapping[str, JSONValue]:
    payload = message.payload
    if not isinstance(payload, Mapping):
        msg = f"{message.type} payload must be an object"
        raise inbox.Reject(msg)
    return payload
