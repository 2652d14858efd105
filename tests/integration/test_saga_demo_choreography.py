"""The choreographed demo's order service: a decided order withdraws its pending deadline (#9)."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

import outbox
from outbox import Envelope
from outboxkit.demo import CARD_OK, ORDER, OrderSpec, Scenario, choreographed_registries
from outboxkit.demo._choreographed import ORDER_DEADLINES, PAYMENT_EVENTS, place_order_choreographed


def _unsent(engine: sa.Engine) -> list[tuple[str, str | None]]:
    table = outbox.outbox_tables(ORDER.outbox).outbox
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.topic, table.c.key).where(table.c.published_at.is_(None)))
        return sorted((r.topic, r.key) for r in rows)


def _event(type_: str, order_id: str) -> Envelope:
    return Envelope(id=uuid.uuid4(), topic=PAYMENT_EVENTS, type=type_, source="payment", key=order_id,
                    time=dt.datetime.now(dt.UTC), payload={"order_id": order_id})  # fmt: skip


def test_choreographed_order_decided_cancels_its_deadline(sqlite_empty_url: str) -> None:
    """Confirming or cancelling an order deletes its unsent deadline, so no delayed backlog stays behind (#9)."""
    outbox.upgrade(sqlite_empty_url, config=ORDER.outbox)
    engine = sa.create_engine(sqlite_empty_url)
    ORDER.metadata.create_all(engine)
    registry = choreographed_registries()[ORDER.name]
    hour = dt.timedelta(hours=1)
    try:
        with Session(engine) as session, session.begin():
            for order_id in ("1", "2", "3"):
                spec = OrderSpec(order_id=order_id, customer="ada", sku="mug", qty=1, card=CARD_OK,
                                 scenario=Scenario.SUCCESS)  # fmt: skip
                place_order_choreographed(session, spec, deadline=hour)
            # The relay takes the OrderPlaced events; the deadlines (an hour away) stay unsent.
            table = outbox.outbox_tables(ORDER.outbox).outbox
            session.execute(sa.update(table).where(table.c.topic != ORDER_DEADLINES)
                            .values(published_at=dt.datetime.now(dt.UTC)))  # fmt: skip
        assert _unsent(engine) == [(ORDER_DEADLINES, "1"), (ORDER_DEADLINES, "2"), (ORDER_DEADLINES, "3")]
        for type_, order_id in (("PaymentCharged", "1"), ("PaymentDeclined", "2")):
            message = _event(type_, order_id)
            spec = registry.match(message)
            assert spec is not None
            with Session(engine) as session, session.begin():
                spec.func(message, session)
        # Orders 1 and 2 are decided: their deadlines are gone; only the undecided order 3 keeps one
        # (plus the follow-up events the decisions published, which the relay will send).
        assert [u for u in _unsent(engine) if u[0] == ORDER_DEADLINES] == [(ORDER_DEADLINES, "3")]
    finally:
        engine.dispose()
