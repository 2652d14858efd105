"""The order saga, choreographed: no orchestrator, each service reacts to the others' events.

========================  ===============================  ==========================================
service                   reacts to                        publishes
========================  ===============================  ==========================================
order                     (a customer's order)             OrderPlaced, and a delayed deadline
inventory                 OrderPlaced                      StockReserved or StockUnavailable
payment                   StockReserved                    PaymentCharged or PaymentDeclined
order                     PaymentCharged                   OrderConfirmed
order                     StockUnavailable, PaymentDeclined,
                          its deadline while pending       OrderCancelled
inventory                 OrderCancelled                   StockReleased (if it had reserved)
payment                   OrderCancelled                   PaymentRefunded (if it had charged)
========================  ===============================  ==========================================

Every event is published through the service's outbox in the inbox
transaction of the event that caused it, keyed by the order id and carrying
the order id as ``correlation_id``. The order service is the only one that
decides an order's fate; the deadline (a delayed outbox message to itself)
plays the orchestrator's timeout.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.orm import Session

import inbox
from outbox import Envelope, JSONValue, outbox_tables, publish
from saga import follow_up_headers, new_flow_headers

from ._events import emit, money
from ._participants import Charge, Faults, charge, refund, release_stock, reserve_stock
from ._scenario import OrderSpec
from ._tables import INVENTORY, ORDER, PAYMENT, Service, demo_order

__all__ = [
    "INVENTORY_EVENTS",
    "ORDER_DEADLINES",
    "ORDER_EVENTS",
    "PAYMENT_EVENTS",
    "choreographed_registries",
    "place_order_choreographed",
]

ORDER_EVENTS = "orders.events"
INVENTORY_EVENTS = "inventory.events"
PAYMENT_EVENTS = "payments.events"
ORDER_DEADLINES = "orders.deadlines"


def _emit_event(session: Session, service: Service, cause: Envelope, topic: str, type_: str,
                payload: JSONValue) -> None:  # fmt: skip
    publish(
        session,
        topic,
        payload,
        key=cause.key,
        type=type_,
        headers=follow_up_headers(cause, event_type=type_),
        config=service.outbox,
    )
    emit(session, "event_published", service=service.name, order_id=str(cause.key),
         text=f"{type_} published on {topic}", tone="dim")  # fmt: skip


def place_order_choreographed(session: Session, spec: OrderSpec, *, deadline: dt.timedelta) -> None:
    """Write the order, OrderPlaced and its deadline in the caller's transaction (the order service's API)."""
    order: dict[str, JSONValue] = {
        "order_id": spec.order_id, "customer": spec.customer, "sku": spec.sku,
        "qty": spec.qty, "amount": spec.amount, "card": spec.card,
    }  # fmt: skip
    session.execute(sa.insert(demo_order).values(id=spec.order_id, status="pending", **{
        k: v for k, v in order.items() if k != "order_id"}))  # fmt: skip
    headers = new_flow_headers(spec.order_id)
    publish(session, ORDER_EVENTS, order, key=spec.order_id, type="OrderPlaced", headers=headers,
            config=ORDER.outbox)  # fmt: skip
    publish(session, ORDER_DEADLINES, {"order_id": spec.order_id}, key=spec.order_id,
            type="OrderDeadlineReached", headers=headers, delay=deadline, config=ORDER.outbox)  # fmt: skip
    emit(session, "order_placed", service="order", order_id=spec.order_id,
         text=f"{spec.customer} orders {spec.qty} x {spec.sku} for {money(spec.amount)}",
         tone="info")  # fmt: skip
    emit(session, "event_published", service="order", order_id=spec.order_id,
         text=f"OrderPlaced published on {ORDER_EVENTS}", tone="dim")  # fmt: skip


def _cancel_deadline(session: Session, order_id: str) -> None:
    """Withdraw the order's unsent deadline, as the orchestrator cancels its timers.

    Without this every decided order leaves a delayed row that turns into due
    backlog, and a pointless OrderDeadlineReached, when its hour comes (#9). A
    deadline already sent is harmless: the order is no longer pending.
    """
    outbox = outbox_tables(ORDER.outbox).outbox
    session.execute(
        sa.delete(outbox).where(
            outbox.c.topic == ORDER_DEADLINES, outbox.c.key == order_id, outbox.c.published_at.is_(None)
        )
    )


def _cancel(session: Session, cause: Envelope, reason: str) -> None:
    order_id = str(_fields(cause)["order_id"])
    done = (
        session.connection()
        .execute(
            sa.update(demo_order)
            .where(demo_order.c.id == order_id, demo_order.c.status == "pending")
            .values(status="cancelled", reason=reason)
        )
        .rowcount
    )
    if not done:
        return  # decided already: a late or duplicate event changes nothing
    _cancel_deadline(session, order_id)
    text = f"order cancelled: {reason}"
    emit(session, "order_cancelled", service="order", order_id=order_id, text=text, tone="undo")
    _emit_event(
        session, ORDER, cause, ORDER_EVENTS, "OrderCancelled", {"order_id": order_id, "reason": reason}
    )


def _order_registry() -> inbox.Registry:
    registry = inbox.Registry()

    @registry.handler(PAYMENT_EVENTS, types="PaymentCharged")
    def on_charged(message: Envelope, session: Session) -> None:
        order_id = str(_fields(message)["order_id"])
        done = (
            session.connection()
            .execute(
                sa.update(demo_order)
                .where(demo_order.c.id == order_id, demo_order.c.status == "pending")
                .values(status="confirmed")
            )
            .rowcount
        )
        if done:  # else cancelled meanwhile (the deadline): payment refunds on OrderCancelled
            _cancel_deadline(session, order_id)
            emit(session, "order_confirmed", service="order", order_id=order_id, text="confirmed", tone="ok")
            _emit_event(session, ORDER, message, ORDER_EVENTS, "OrderConfirmed", {"order_id": order_id})

    @registry.handler(PAYMENT_EVENTS, types="PaymentDeclined")
    def on_declined(message: Envelope, session: Session) -> None:
        _cancel(session, message, "payment declined")

    @registry.handler(INVENTORY_EVENTS, types="StockUnavailable")
    def on_unavailable(message: Envelope, session: Session) -> None:
        _cancel(session, message, "out of stock")

    @registry.handler(ORDER_DEADLINES, types="OrderDeadlineReached")
    def on_deadline(message: Envelope, session: Session) -> None:
        _cancel(session, message, "payment timed out")

    return registry


def _inventory_registry(faults: Faults) -> inbox.Registry:
    registry = inbox.Registry()

    @registry.handler(ORDER_EVENTS, types="OrderPlaced")
    def on_placed(message: Envelope, session: Session) -> None:
        order = _fields(message)
        refused = reserve_stock(session, str(order["order_id"]), str(order["sku"]), int(str(order["qty"])))
        if refused is None:
            _emit_event(session, INVENTORY, message, INVENTORY_EVENTS, "StockReserved", dict(order))
        else:
            payload = {"order_id": order["order_id"], "reason": refused}
            _emit_event(session, INVENTORY, message, INVENTORY_EVENTS, "StockUnavailable", payload)

    @registry.handler(ORDER_EVENTS, types="OrderCancelled")
    def on_cancelled(message: Envelope, session: Session) -> None:
        order_id = str(_fields(message)["order_id"])
        if release_stock(session, order_id, faults):
            _emit_event(
                session, INVENTORY, message, INVENTORY_EVENTS, "StockReleased", {"order_id": order_id}
            )

    return registry


def _payment_registry(faults: Faults) -> inbox.Registry:
    registry = inbox.Registry()

    @registry.handler(INVENTORY_EVENTS, types="StockReserved")
    def on_reserved(message: Envelope, session: Session) -> None:
        o = _fields(message)
        order_id = str(o["order_id"])
        outcome = charge(session, order_id, str(o["customer"]), int(str(o["amount"])), str(o["card"]))
        if outcome is Charge.CHARGED:
            _emit_event(session, PAYMENT, message, PAYMENT_EVENTS, "PaymentCharged", {"order_id": order_id})
        elif outcome is Charge.DECLINED:
            _emit_event(session, PAYMENT, message, PAYMENT_EVENTS, "PaymentDeclined", {"order_id": order_id})
        # UNANSWERED: the event is lost, the order's deadline will notice; REFUSED: cancelled before.

    @registry.handler(ORDER_EVENTS, types="OrderCancelled")
    def on_cancelled(message: Envelope, session: Session) -> None:
        order_id = str(_fields(message)["order_id"])
        if refund(session, order_id, faults):
            _emit_event(session, PAYMENT, message, PAYMENT_EVENTS, "PaymentRefunded", {"order_id": order_id})

    return registry


def choreographed_registries(faults: Faults | None = None) -> dict[str, inbox.Registry]:
    """The handlers of each service, by service name."""
    faults = faults or Faults()
    return {
        ORDER.name: _order_registry(),
        INVENTORY.name: _inventory_registry(faults),
        PAYMENT.name: _payment_registry(faults),
    }


def _fields(message: Envelope) -> Mapping[str, JSONValue]:
    payload = message.payload
    if not isinstance(payload, Mapping) or "order_id" not in payload:
        msg = f"{message.type} payload must be an object with an order_id"
        raise inbox.Reject(msg)
    return payload
