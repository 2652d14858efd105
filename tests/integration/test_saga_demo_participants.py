"""The example's participants (outboxkit.demo): resent commands, repeated and early compensations change nothing more."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from outboxkit.demo import INVENTORY, PAYMENT, Faults
from outboxkit.demo._participants import Charge, charge, refund, release_stock, reserve_stock
from outboxkit.demo._tables import demo_payment, demo_reservation, demo_stock

NO_FAULTS = Faults()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(db_url)
    INVENTORY.metadata.create_all(eng)
    PAYMENT.metadata.create_all(eng)
    with eng.begin() as conn:
        conn.execute(sa.insert(demo_stock).values(sku="mug", initial=10, available=10))
    yield eng
    eng.dispose()


def _in_tx(engine: sa.Engine, fn, *args):  # type: ignore[no-untyped-def]
    with Session(engine) as session, session.begin():
        return fn(session, *args)


def _available(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(demo_stock.c.available)).scalar_one())


def _status(engine: sa.Engine, table: sa.Table, order_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(table.c.status).where(table.c.order_id == order_id)).scalar()


def test_saga_demo_resent_reserve_takes_stock_once(engine: sa.Engine) -> None:
    """A resent ReserveStock (a new message id the inbox cannot recognise) answers the same and takes nothing more."""
    assert _in_tx(engine, reserve_stock, "o1", "mug", 3) is None
    assert _in_tx(engine, reserve_stock, "o1", "mug", 3) is None
    assert _available(engine) == 7


def test_saga_demo_release_twice_returns_stock_once(engine: sa.Engine) -> None:
    """A repeated ReleaseStock puts the stock back once."""
    _in_tx(engine, reserve_stock, "o1", "mug", 3)
    assert _in_tx(engine, release_stock, "o1", NO_FAULTS) is True
    assert _in_tx(engine, release_stock, "o1", NO_FAULTS) is False
    assert _available(engine) == 10


def test_saga_demo_release_before_reserve_refuses_the_late_reserve(engine: sa.Engine) -> None:
    """A compensation that arrives first leaves a tombstone: the late action is refused and takes nothing."""
    assert _in_tx(engine, release_stock, "o1", NO_FAULTS) is False
    assert _in_tx(engine, reserve_stock, "o1", "mug", 3) is not None
    assert _available(engine) == 10


def test_saga_demo_out_of_stock_is_refused_and_remembered(engine: sa.Engine) -> None:
    """Asking for more than is available refuses, and a resent command is refused again."""
    assert _in_tx(engine, reserve_stock, "o1", "mug", 11) is not None
    assert _in_tx(engine, reserve_stock, "o1", "mug", 11) is not None
    assert _status(engine, demo_reservation, "o1") == "refused"
    assert _available(engine) == 10


def test_saga_demo_resent_charge_charges_once_and_refund_twice_refunds_once(engine: sa.Engine) -> None:
    """Charge and refund are keyed by the order: repeats change nothing."""
    assert _in_tx(engine, charge, "o1", "ada", 900, "4242") is Charge.CHARGED
    assert _in_tx(engine, charge, "o1", "ada", 900, "4242") is Charge.CHARGED
    assert _in_tx(engine, refund, "o1", NO_FAULTS) is True
    assert _in_tx(engine, refund, "o1", NO_FAULTS) is False
    assert _status(engine, demo_payment, "o1") == "refunded"


def test_saga_demo_refund_before_charge_refuses_the_late_charge(engine: sa.Engine) -> None:
    """After a timeout the refund may come first: it voids the order's payment, and the late charge takes nothing."""
    assert _in_tx(engine, refund, "o1", NO_FAULTS) is False
    assert _in_tx(engine, charge, "o1", "ada", 900, "4242") is Charge.REFUSED
    assert _status(engine, demo_payment, "o1") == "voided"


def test_saga_demo_silent_card_is_charged_but_unanswered(engine: sa.Engine) -> None:
    """The card that never answers is charged once, and a resent command stays unanswered."""
    assert _in_tx(engine, charge, "o1", "ada", 900, "0259") is Charge.UNANSWERED
    assert _in_tx(engine, charge, "o1", "ada", 900, "0259") is Charge.UNANSWERED
    assert _status(engine, demo_payment, "o1") == "charged"
