"""The order / payment / inventory saga of ``outboxkit demo`` and ``examples/order_saga``.

Three services, each with its own database, outbox, relay and consumer:

* **order** takes orders and decides their fate;
* **inventory** reserves and releases stock;
* **payment** charges and refunds cards.

The same business runs orchestrated (:func:`orchestrated_registries`: the
order service hosts a :class:`saga.Orchestrator`) or choreographed
(:func:`choreographed_registries`: services react to each other's events).
Business rules are deterministic (see :mod:`outboxkit.demo._scenario`), so a run
is planned and then checked against the three databases
(:func:`check_consistency`). See ``docs/sagas.md`` and
``examples/order_saga/README.md``.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._check import Check, OrderRow, all_passed, check_consistency, select_orders
from ._choreographed import (
    INVENTORY_EVENTS,
    ORDER_DEADLINES,
    ORDER_EVENTS,
    PAYMENT_EVENTS,
    choreographed_registries,
    place_order_choreographed,
)
from ._events import money
from ._orchestrated import (
    INVENTORY_COMMANDS,
    PAYMENT_COMMANDS,
    REPLY_TOPIC,
    TIMER_TOPIC,
    make_orchestrator,
    orchestrated_registries,
    order_saga,
    place_order,
)
from ._participants import Faults
from ._scenario import (
    CARD_DECLINED,
    CARD_OK,
    CARD_SILENT,
    CATALOGUE,
    SOLD_OUT,
    OrderSpec,
    Scenario,
    initial_stock,
    plan_orders,
)
from ._setup import Style, prepare_databases, seed_stock
from ._tables import INVENTORY, ORDER, PAYMENT, SERVICES, Service

__all__ = [
    "CARD_DECLINED",
    "CARD_OK",
    "CARD_SILENT",
    "CATALOGUE",
    "INVENTORY",
    "INVENTORY_COMMANDS",
    "INVENTORY_EVENTS",
    "ORDER",
    "ORDER_DEADLINES",
    "ORDER_EVENTS",
    "PAYMENT",
    "PAYMENT_COMMANDS",
    "PAYMENT_EVENTS",
    "REPLY_TOPIC",
    "SERVICES",
    "SOLD_OUT",
    "TIMER_TOPIC",
    "Check",
    "Faults",
    "OrderRow",
    "OrderSpec",
    "Scenario",
    "Service",
    "Style",
    "all_passed",
    "check_consistency",
    "choreographed_registries",
    "initial_stock",
    "make_orchestrator",
    "money",
    "orchestrated_registries",
    "order_saga",
    "place_order",
    "place_order_choreographed",
    "plan_orders",
    "prepare_databases",
    "seed_stock",
    "select_orders",
]
