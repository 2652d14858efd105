"""The inventory and payment services' business logic, shared by both saga styles.

Every function is idempotent per order: the order id is the primary key of the
reservation and of the payment, so a resent command (a new message id, which
the inbox cannot recognise) finds the earlier outcome and repeats it instead of
acting twice. Compensations accept "nothing to undo" and leave a tombstone, so
an action that arrives after its compensation is refused.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ._events import emit, money
from ._scenario import CARD_DECLINED, CARD_SILENT
from ._tables import demo_payment, demo_reservation, demo_stock

__all__ = ["Charge", "Faults", "charge", "refund", "release_stock", "reserve_stock"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Faults:
    """Bugs planted on purpose, to show that the consistency check catches them."""

    skip_refund: bool = False
    skip_release: bool = False


def reserve_stock(session: Session, order_id: str, sku: str, qty: int) -> str | None:
    """Reserve ``qty`` of ``sku`` for the order; ``None`` when reserved, else why not."""
    existing = session.execute(
        sa.select(demo_reservation.c.status).where(demo_reservation.c.order_id == order_id)
    ).scalar()
    if existing is not None:  # a resent command: answer as the first time
        return None if existing == "reserved" else f"stock {existing} earlier"
    taken = (
        session.connection()
        .execute(
            sa.update(demo_stock)
            .where(demo_stock.c.sku == sku, demo_stock.c.available >= qty)
            .values(available=demo_stock.c.available - qty)
        )
        .rowcount
    )
    status = "reserved" if taken == 1 else "refused"
    session.execute(sa.insert(demo_reservation).values(order_id=order_id, sku=sku, qty=qty, status=status))
    if status == "refused":
        emit(session, "stock_unavailable", service="inventory", order_id=order_id,
             text=f"{sku} is out of stock", tone="fail")  # fmt: skip
        return f"{sku} out of stock"
    left = session.execute(sa.select(demo_stock.c.available).where(demo_stock.c.sku == sku)).scalar()
    emit(session, "stock_reserved", service="inventory", order_id=order_id,
         text=f"{qty} x {sku} reserved ({left} left)", tone="ok")  # fmt: skip
    return None


def release_stock(session: Session, order_id: str, faults: Faults) -> bool:
    """Undo the order's reservation, if any; leave a tombstone otherwise. True when stock came back."""
    row = session.execute(
        sa.select(demo_reservation.c.status, demo_reservation.c.sku, demo_reservation.c.qty).where(
            demo_reservation.c.order_id == order_id
        )
    ).first()
    if row is None:
        session.execute(
            sa.insert(demo_reservation).values(order_id=order_id, sku="-", qty=0, status="released")
        )
        emit(session, "release_not_needed", service="inventory", order_id=order_id,
             text="nothing reserved, nothing to release", tone="info")  # fmt: skip
        return False
    if row.status != "reserved":
        return False  # released already (a duplicate compensation), or never reserved
    if faults.skip_release:  # the planted bug: say "released" and keep the stock
        emit(session, "stock_released", service="inventory", order_id=order_id,
             text=f"{row.qty} x {row.sku} released (NOT REALLY: planted bug)", tone="undo")  # fmt: skip
        return True
    session.execute(
        sa.update(demo_stock)
        .where(demo_stock.c.sku == row.sku)
        .values(available=demo_stock.c.available + row.qty)
    )
    session.execute(
        sa.update(demo_reservation).where(demo_reservation.c.order_id == order_id).values(status="released")
    )
    emit(session, "stock_released", service="inventory", order_id=order_id,
         text=f"{row.qty} x {row.sku} back in stock", tone="undo")  # fmt: skip
    return True


class Charge(enum.StrEnum):
    """What charging a card did."""

    CHARGED = "charged"
    DECLINED = "declined"
    UNANSWERED = "unanswered"  # charged, but the answer is lost
    REFUSED = "refused"  # the order was cancelled before: no charge


def charge(session: Session, order_id: str, customer: str, amount: int, card: str) -> Charge:
    """Charge the card once per order; a card ending in 0002 is declined, one ending in 0259 never answers."""
    existing = session.execute(
        sa.select(demo_payment.c.status).where(demo_payment.c.order_id == order_id)
    ).scalar()
    if existing is not None:  # a resent command: the same outcome, nothing charged twice
        if existing in {"refunded", "voided"}:
            return Charge.REFUSED
        if existing == "charged":
            return Charge.UNANSWERED if card == CARD_SILENT else Charge.CHARGED
        return Charge.DECLINED
    declined = card == CARD_DECLINED
    status = "declined" if declined else "charged"
    session.execute(
        sa.insert(demo_payment).values(order_id=order_id, customer=customer, amount=amount, status=status)
    )
    if declined:
        emit(session, "payment_declined", service="payment", order_id=order_id,
             text=f"card {card} declined", tone="fail")  # fmt: skip
        return Charge.DECLINED
    if card == CARD_SILENT:
        emit(session, "payment_unanswered", service="payment", order_id=order_id,
             text=f"{money(amount)} charged on card {card}, but the answer is lost", tone="fail")  # fmt: skip
        return Charge.UNANSWERED
    emit(session, "payment_charged", service="payment", order_id=order_id,
         text=f"{money(amount)} charged on card {card}", tone="ok")  # fmt: skip
    return Charge.CHARGED


def refund(session: Session, order_id: str, faults: Faults) -> bool:
    """Refund the order's charge, if any; leave a tombstone otherwise. True when money went back."""
    row = session.execute(
        sa.select(demo_payment.c.status, demo_payment.c.amount).where(demo_payment.c.order_id == order_id)
    ).first()
    if row is None:
        session.execute(
            sa.insert(demo_payment).values(order_id=order_id, customer="-", amount=0, status="voided")
        )
        emit(session, "refund_not_needed", service="payment", order_id=order_id,
             text="nothing charged, nothing to refund", tone="info")  # fmt: skip
        return False
    if row.status != "charged":
        return False  # refunded already, or declined: nothing to give back
    if faults.skip_refund:  # the planted bug: say "refunded" and keep the money
        emit(session, "payment_refunded", service="payment", order_id=order_id,
             text=f"{money(row.amount)} refunded (NOT REALLY: planted bug)", tone="undo")  # fmt: skip
        return True
    session.execute(
        sa.update(demo_payment).where(demo_payment.c.order_id == order_id).values(status="refunded")
    )
    emit(session, "payment_refunded", service="payment", order_id=order_id,
         text=f"{money(row.amount)} refunded", tone="undo")  # fmt: skip
    return True
