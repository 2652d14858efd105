"""The consistency check of a run, computed from the three services' databases alone.

After every order has reached its end, these must hold whatever crashed or was
delivered twice on the way:

* money charged (and not refunded) = the money of the confirmed orders;
* stock taken from the shelves = stock reserved = the items of the confirmed orders;
* no order is left pending (and, orchestrated, no saga is left running).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from saga.tables import saga_instance

from ._events import money
from ._tables import demo_order, demo_payment, demo_reservation, demo_stock

__all__ = ["Check", "OrderRow", "check_consistency", "select_orders"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Check:
    """One line of the consistency check."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderRow:
    """An order as the order service stores it."""

    order_id: str
    customer: str
    sku: str
    qty: int
    amount: int
    status: str
    reason: str | None


def select_orders(orders: sa.Engine) -> list[OrderRow]:
    """Every order, by id."""
    o = demo_order
    query = sa.select(o.c.id, o.c.customer, o.c.sku, o.c.qty, o.c.amount, o.c.status, o.c.reason).order_by(
        o.c.id
    )
    with orders.connect() as conn:
        return [
            OrderRow(order_id=r[0], customer=r[1], sku=r[2], qty=r[3], amount=r[4], status=r[5], reason=r[6])
            for r in conn.execute(query)
        ]


def _scalar(engine: sa.Engine, query: sa.Select[Any]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def check_consistency(
    orders: sa.Engine, inventory: sa.Engine, payments: sa.Engine, *, expected_orders: int, sagas: bool
) -> list[Check]:
    """The checks, each computed from the databases; ``sagas`` adds the orchestrator's."""
    rows = select_orders(orders)
    confirmed = [r for r in rows if r.status == "confirmed"]
    pending = [r.order_id for r in rows if r.status == "pending"]
    confirmed_money = sum(r.amount for r in confirmed)
    confirmed_items = sum(r.qty for r in confirmed)
    charged = _scalar(
        payments, sa.select(sa.func.sum(demo_payment.c.amount)).where(demo_payment.c.status == "charged")
    )
    reserved = _scalar(
        inventory,
        sa.select(sa.func.sum(demo_reservation.c.qty)).where(demo_reservation.c.status == "reserved"),
    )
    taken = _scalar(inventory, sa.select(sa.func.sum(demo_stock.c.initial - demo_stock.c.available)))
    checks = [
        Check(
            name="every order placed",
            ok=len(rows) == expected_orders,
            detail=f"{len(rows)} of {expected_orders}",
        ),
        Check(
            name="money charged = money of confirmed orders",
            ok=charged == confirmed_money,
            detail=f"{money(charged)} charged, {money(confirmed_money)} confirmed",
        ),
        Check(
            name="stock reserved = items of confirmed orders",
            ok=reserved == confirmed_items == taken,
            detail=f"{reserved} reserved, {taken} off the shelves, {confirmed_items} confirmed",
        ),
        Check(
            name="no order left pending",
            ok=not pending,
            detail="none" if not pending else ", ".join(f"#{p}" for p in pending),
        ),
    ]
    if sagas:
        checks.append(_sagas_check(orders))
    return checks


def _sagas_check(orders: sa.Engine) -> Check:
    s = saga_instance
    with orders.connect() as conn:
        rows = conn.execute(sa.select(s.c.state, sa.func.count()).group_by(s.c.state)).all()
    counts = {str(state): int(n) for state, n in rows}
    unfinished = sum(n for state, n in counts.items() if state not in {"completed", "compensated"})
    detail = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"
    return Check(name="every saga finished", ok=unfinished == 0, detail=detail)


def all_passed(checks: Sequence[Check]) -> bool:
    """Whether every check passed."""
    return all(c.ok for c in checks)
