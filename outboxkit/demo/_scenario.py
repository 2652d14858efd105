"""The orders of a run: who buys what with which card, and the outcome the business rules dictate.

The rules are deterministic, so a run can be planned:

* a card ending in ``0002`` is declined by the payment service;
* a card ending in ``0259`` is charged, but the payment service's answer is
  lost (it never replies): the saga times out and must refund it;
* ``vinyl-limited`` is sold out: the inventory service refuses to reserve it.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

__all__ = [
    "CARD_DECLINED",
    "CARD_OK",
    "CARD_SILENT",
    "CATALOGUE",
    "SOLD_OUT",
    "OrderSpec",
    "Scenario",
    "initial_stock",
    "plan_orders",
]

CARD_OK = "4242"
CARD_DECLINED = "0002"
CARD_SILENT = "0259"
CATALOGUE = {"espresso-beans": 1200, "grinder": 8900, "kettle": 4500, "mug": 900, "vinyl-limited": 3500}
"""Price of each SKU, in cents."""
SOLD_OUT = "vinyl-limited"
_CUSTOMERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
_MAX_QTY = 3


class Scenario(enum.StrEnum):
    """What is meant to happen to an order."""

    SUCCESS = "success"
    DECLINED = "payment declined"
    OUT_OF_STOCK = "out of stock"
    RELAY_CRASH = "relay crash"
    TIMEOUT = "payment timeout"

    @property
    def expected_status(self) -> str:
        """The order's final status under the business rules."""
        return "confirmed" if self in {Scenario.SUCCESS, Scenario.RELAY_CRASH} else "cancelled"


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderSpec:
    """One order to place."""

    order_id: str
    customer: str
    sku: str
    qty: int
    card: str
    scenario: Scenario

    @property
    def amount(self) -> int:
        """The price of the order, in cents."""
        return CATALOGUE[self.sku] * self.qty


_SHOWCASE = (
    (Scenario.SUCCESS, "espresso-beans", 2, CARD_OK),
    (Scenario.DECLINED, "grinder", 1, CARD_DECLINED),
    (Scenario.OUT_OF_STOCK, SOLD_OUT, 1, CARD_OK),
    (Scenario.RELAY_CRASH, "kettle", 1, CARD_OK),
    (Scenario.TIMEOUT, "mug", 3, CARD_SILENT),
)


def plan_orders(
    count: int, *, decline_rate: float = 0.2, out_of_stock_rate: float = 0.1, seed: int = 7
) -> list[OrderSpec]:
    """The first orders show one outcome each (in order); later ones are drawn with the given rates."""
    rng = random.Random(seed)  # noqa: S311 - a demo's dice, not cryptography
    in_stock = sorted(sku for sku in CATALOGUE if sku != SOLD_OUT)
    specs = []
    for index in range(count):
        if index < len(_SHOWCASE):
            scenario, sku, qty, card = _SHOWCASE[index]
        else:
            draw = rng.random()
            qty = rng.randint(1, _MAX_QTY)
            if draw < decline_rate:
                scenario, sku, card = Scenario.DECLINED, rng.choice(in_stock), CARD_DECLINED
            elif draw < decline_rate + out_of_stock_rate:
                scenario, sku, card = Scenario.OUT_OF_STOCK, SOLD_OUT, CARD_OK
            else:
                scenario, sku, card = Scenario.SUCCESS, rng.choice(in_stock), CARD_OK
        specs.append(
            OrderSpec(
                order_id=str(1001 + index),
                customer=_CUSTOMERS[index % len(_CUSTOMERS)],
                sku=sku,
                qty=qty,
                card=card,
                scenario=scenario,
            )
        )
    return specs


def initial_stock(count: int) -> dict[str, int]:
    """Units of each SKU at the start: enough for every order, except the sold-out SKU."""
    return {sku: 0 if sku == SOLD_OUT else 10 + _MAX_QTY * count for sku in CATALOGUE}
