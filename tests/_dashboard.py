"""Helpers for the dashboard tests: data to look at, a logged-in client, and row counts to compare."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

import outbox
from outbox import publish
from tests._saga import INVENTORY, answer, deliver, last, make_engine, orchestrator, start

TOKEN = "test-token-0123456789abcdef"
HOSTILE = "<script>alert('x')</script>"


@dataclass(frozen=True, slots=True)
class Seeded:
    """What :func:`seed` wrote."""

    letters: dict[str, int]  # name -> relay dead-letter (outbox) id
    consumer_letter: int
    running_saga: uuid.UUID
    compensated_saga: uuid.UUID


def dead_letter(
    engine: sa.Engine, outbox_id: int, error: str, *, age: dt.timedelta = dt.timedelta(0)
) -> None:
    """Move an outbox row to the dead-letter table the way the relay does (same columns, same id)."""
    tables = outbox.outbox_tables()
    o, dl = tables.outbox, tables.dead_letter
    names = [c.name for c in dl.columns if c.name in o.c and c.name not in ("attempts", "last_error")]
    when = dt.datetime.now(dt.UTC) - age
    source = sa.select(
        *(o.c[n] for n in names),
        sa.literal(5).label("attempts"),
        sa.literal(error, sa.Text).label("last_error"),
        sa.literal(when, dl.c.dead_lettered_at.type).label("dead_lettered_at"),
    ).where(o.c.id == outbox_id)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(dl).from_select([*names, "attempts", "last_error", "dead_lettered_at"], source)
        )
        conn.execute(sa.delete(o).where(o.c.id == outbox_id))


def _publish(engine: sa.Engine, topic: str, payload: object, key: str) -> int:
    with Session(engine) as session, session.begin():
        message_id = publish(session, topic, payload, key=key)
    o = outbox.outbox_tables().outbox
    with engine.connect() as conn:
        return int(conn.execute(sa.select(o.c.id).where(o.c.message_id == message_id)).scalar_one())


def seed(url: str) -> Seeded:
    """Two relay dead letters (one old, one with a hostile payload), a later row of the same key,
    a consumer dead letter, a running saga and a compensated one."""
    engine = make_engine(url)
    try:
        letters = {
            "card": _publish(engine, "payments", {"card": "4111", "note": HOSTILE}, "cust-1"),
            "old": _publish(engine, "orders", {"n": 1}, "order-7"),
        }
        _publish(engine, "payments", {"n": 2}, "cust-1")  # waits behind the first one's key
        dead_letter(engine, letters["card"], "BrokerError: payload too large " + HOSTILE)
        dead_letter(engine, letters["old"], "TimeoutError: broker did not answer", age=dt.timedelta(hours=2))
        with engine.begin() as conn:
            consumer_id = conn.execute(
                sa.text(
                    "INSERT INTO outboxkit_inbox_dead_letter (consumer, stream, entry_id, topic, key, fields, error,"
                    " deliveries, dead_lettered_at) VALUES ('billing', 'payments', '1-0', 'payments', 'cust-9',"
                    " :fields, 'ValueError: bad amount', 5, :now) RETURNING id"
                ),
                {
                    "fields": '{"data": "{\\"amount\\": -1}", "type": "Charge"}',
                    "now": dt.datetime.now(dt.UTC),
                },
            ).scalar_one()
        orch = orchestrator()
        running = start(engine, orch)
        compensated = start(engine, orch)
        deliver(engine, orch, answer(engine, last(engine, INVENTORY), ok=False, reason="sold out"))
        return Seeded(letters=letters, consumer_letter=int(consumer_id), running_saga=running,
                      compensated_saga=compensated)  # fmt: skip
    finally:
        engine.dispose()


def csrf_of(page: str) -> str:
    """The CSRF token in a page's forms."""
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "the page has no CSRF field (not logged in?)"
    return match.group(1)


def counts(url: str) -> dict[str, int]:
    """Rows per toolkit table: what "nothing changed" is checked against."""
    engine = sa.create_engine(url)
    names = ["outbox", "outbox_dead_letter", "outboxkit_inbox_dead_letter", "outboxkit_saga",
             "outboxkit_saga_step_log", "outboxkit_saga_timer"]  # fmt: skip
    try:
        with engine.connect() as conn:
            found = {n: int(conn.execute(sa.text(f"SELECT count(*) FROM {n}")).scalar_one()) for n in names}
            found["retried"] = int(
                conn.execute(
                    sa.text("SELECT count(*) FROM outbox_dead_letter WHERE retried_at IS NOT NULL")
                ).scalar_one()
            )
            return found
    finally:
        engine.dispose()
