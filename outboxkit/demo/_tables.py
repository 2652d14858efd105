"""The three services of the order saga and their tables: each service owns its own database.

These tables belong to the example's business, not to the toolkit: they are
created with ``metadata.create_all`` next to the toolkit's tables (which come
from ``outbox.upgrade``). Each service writes to its own outbox table, named
after it, and stamps its messages with its own CloudEvents ``source``.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from outbox import OutboxConfig

__all__ = [
    "INVENTORY",
    "ORDER",
    "PAYMENT",
    "SERVICES",
    "Service",
    "demo_order",
    "demo_payment",
    "demo_reservation",
    "demo_stock",
]

order_metadata = sa.MetaData()
inventory_metadata = sa.MetaData()
payment_metadata = sa.MetaData()

demo_order = sa.Table(
    "demo_order",
    order_metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("customer", sa.String(64), nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("qty", sa.Integer, nullable=False),
    sa.Column("amount", sa.Integer, nullable=False, comment="cents"),
    sa.Column("card", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, comment="pending, confirmed or cancelled"),
    sa.Column("reason", sa.String(255)),
)

demo_stock = sa.Table(
    "demo_stock",
    inventory_metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("initial", sa.Integer, nullable=False),
    sa.Column("available", sa.Integer, nullable=False),
)

demo_reservation = sa.Table(
    "demo_reservation",
    inventory_metadata,
    # One reservation per order: the key that makes a resent command harmless.
    sa.Column("order_id", sa.String(32), primary_key=True),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("qty", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, comment="reserved, released or refused"),
)

demo_payment = sa.Table(
    "demo_payment",
    payment_metadata,
    # One payment per order: a resent charge finds it and charges nothing more.
    sa.Column("order_id", sa.String(32), primary_key=True),
    sa.Column("customer", sa.String(64), nullable=False),
    sa.Column("amount", sa.Integer, nullable=False, comment="cents"),
    sa.Column("status", sa.String(16), nullable=False, comment="charged, declined, refunded or voided"),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Service:
    """One service of the example: its name, consumer group, outbox and business tables."""

    name: str
    group: str
    outbox: OutboxConfig
    metadata: sa.MetaData


ORDER = Service(
    name="order",
    group="order-service",
    outbox=OutboxConfig(table="order_outbox", source="outboxkit-demo/order"),
    metadata=order_metadata,
)
INVENTORY = Service(
    name="inventory",
    group="inventory-service",
    outbox=OutboxConfig(table="inventory_outbox", source="outboxkit-demo/inventory"),
    metadata=inventory_metadata,
)
PAYMENT = Service(
    name="payment",
    group="payment-service",
    outbox=OutboxConfig(table="payment_outbox", source="outboxkit-demo/payment"),
    metadata=payment_metadata,
)
SERVICES = (ORDER, INVENTORY, PAYMENT)
