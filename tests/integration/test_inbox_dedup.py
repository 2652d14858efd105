"""The inbox record against real databases: dedup, races, async sessions, retention."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid

import pytest
from sqlalchemy import create_engine, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import inbox
import outbox
from brokers.sql_table import async_url
from outbox import Envelope
from tests._inbox import domain, effect, record_effect


def _message(topic: str = "payments.requested") -> Envelope:
    return Envelope(
        id=uuid.uuid4(),
        topic=topic,
        type=topic,
        source="t",
        key="k",
        time=dt.datetime.now(dt.UTC),
        payload={"n": 1},
    )


def _effects(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        count = int(conn.execute(select(func.count()).select_from(effect)).scalar() or 0)
    engine.dispose()
    return count


def test_process_skips_duplicate_on_both_databases(db_url: str) -> None:
    """A message processed twice by one consumer has its effect once, on SQLite and PostgreSQL."""
    engine = create_engine(db_url)
    domain.create_all(engine)
    message = _message()
    outcomes = []
    for _ in range(5):
        with Session(engine) as session, session.begin():
            outcomes.append(inbox.process(session, "billing", message, record_effect))
    assert outcomes == [inbox.Outcome.PROCESSED] + [inbox.Outcome.DUPLICATE] * 4
    assert _effects(db_url) == 1
    with engine.connect() as conn:
        row = conn.execute(select(inbox.inbox)).one()
    assert (row.consumer, row.message_id, row.topic, row.attempts) == (
        "billing",
        str(message.id),
        message.topic,
        1,
    )
    engine.dispose()


def test_process_race_commits_effect_exactly_once(pg_url: str) -> None:
    """Two transactions racing on one id: the second waits for the first, then sees a duplicate, no error."""
    engine = create_engine(pg_url, pool_size=4)
    domain.create_all(engine)
    message = _message()
    results: dict[str, object] = {}
    first_inside = threading.Event()

    def first() -> None:
        with Session(engine) as session, session.begin():
            results["first"] = inbox.process(session, "billing", message, record_effect)
            first_inside.set()
            time.sleep(0.5)  # the second transaction is now blocked on our uncommitted row

    def second() -> None:
        first_inside.wait(5)
        started = time.monotonic()
        with Session(engine) as session, session.begin():
            results["second"] = inbox.process(session, "billing", message, record_effect)
        results["waited"] = time.monotonic() - started

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results["first"] is inbox.Outcome.PROCESSED
    assert results["second"] is inbox.Outcome.DUPLICATE
    assert float(results["waited"]) > 0.2  # type: ignore[arg-type]
    assert _effects(pg_url) == 1
    engine.dispose()


def test_process_race_after_rollback_processes_again(pg_url: str) -> None:
    """If the first transaction rolls back, the waiting one inserts the record and runs the handler."""
    engine = create_engine(pg_url, pool_size=4)
    domain.create_all(engine)
    message = _message()
    results: dict[str, object] = {}
    first_inside = threading.Event()

    def first() -> None:
        session = Session(engine)
        session.begin()
        inbox.process(session, "billing", message, record_effect)
        first_inside.set()
        time.sleep(0.3)
        session.rollback()
        session.close()

    def second() -> None:
        first_inside.wait(5)
        with Session(engine) as session, session.begin():
            results["second"] = inbox.process(session, "billing", message, record_effect)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results["second"] is inbox.Outcome.PROCESSED
    assert _effects(pg_url) == 1
    engine.dispose()


async def test_process_async_skips_duplicate(db_url: str) -> None:
    """process_async with an AsyncSession dedups like the sync form."""
    sync_engine = create_engine(db_url)
    domain.create_all(sync_engine)
    sync_engine.dispose()
    engine = create_async_engine(async_url(db_url))
    message = _message()

    async def handler(m: Envelope, session: AsyncSession) -> None:
        await session.execute(insert(effect).values(message_id=str(m.id), n=1))

    outcomes = []
    for _ in range(3):
        async with AsyncSession(engine) as session, session.begin():
            outcomes.append(await inbox.process_async(session, "billing", message, handler))
    await engine.dispose()
    assert outcomes == [inbox.Outcome.PROCESSED, inbox.Outcome.DUPLICATE, inbox.Outcome.DUPLICATE]
    assert _effects(db_url) == 1


def test_follow_up_event_in_outbox_iff_handler_commits(db_url: str) -> None:
    """A follow-up published by a handler is in the outbox only when the handler's transaction commits."""
    engine = create_engine(db_url)
    domain.create_all(engine)
    ok, failing = _message(), _message()

    def handler(message: Envelope, session: Session) -> None:
        inbox.publish_follow_up(session, message, "payments.charged", {"ok": True}, key="k")
        if message is failing:
            raise RuntimeError("after publishing")

    with Session(engine) as session, session.begin():
        inbox.process(session, "billing", ok, handler)
    with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
        inbox.process(session, "billing", failing, handler)
    table = outbox.outbox_tables().outbox
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.topic, table.c.headers)).all()
        inbox_rows = conn.execute(select(inbox.inbox.c.message_id)).scalars().all()
    assert len(rows) == 1
    headers = rows[0].headers if isinstance(rows[0].headers, dict) else json.loads(rows[0].headers)
    assert headers == {"correlation_id": str(ok.id), "causation_id": str(ok.id)}
    assert inbox_rows == [str(ok.id)]
    engine.dispose()


def test_purge_inbox_deletes_old_records_in_batches(db_url: str) -> None:
    """Retention deletes only records older than the window, batch by batch."""
    engine = create_engine(db_url)
    with engine.begin() as conn:
        inbox.record_messages(conn, "billing", [(f"old-{i}", "t") for i in range(25)])
        conn.execute(update(inbox.inbox).values(processed_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=8)))
        inbox.record_messages(conn, "billing", [(f"new-{i}", "t") for i in range(5)])
        inbox.record_messages(conn, "other", [("old-x", "t")])
        conn.execute(
            update(inbox.inbox)
            .where(inbox.inbox.c.consumer == "other")
            .values(processed_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=8))
        )
    deleted = inbox.purge_inbox(engine, older_than=dt.timedelta(days=7), consumer="billing", batch_size=10)
    assert deleted == 25
    with engine.connect() as conn:
        left = sorted(conn.execute(select(inbox.inbox.c.message_id)).scalars())
    assert left == ["new-0", "new-1", "new-2", "new-3", "new-4", "old-x"]
    engine.dispose()
