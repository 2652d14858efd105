"""Business code: the order row and its event commit together, or not at all."""

from __future__ import annotations

import uuid
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from outbox import publish

from .models import customers, orders


def place_order(session: Session, customer: str, total: Decimal) -> uuid.UUID:
    """Insert an order and publish `orders.placed` in the caller's transaction."""
    customer_id = session.execute(sa.select(customers.c.id).where(customers.c.name == customer)).scalar()
    if customer_id is None:
        customer_id = session.execute(sa.insert(customers).values(name=customer)).inserted_primary_key[0]
    order_id = session.execute(
        sa.insert(orders).values(customer_id=customer_id, total=total)
    ).inserted_primary_key[0]
    return publish(
        session,
        "orders.placed",
        {"order_id": order_id, "customer": customer, "total": total},
        key=f"order-{order_id}",
        type="OrderPlaced",
    )
