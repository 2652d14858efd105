"""publish on asyncio sessions and connections: PostgreSQL (psycopg) and SQLite (aiosqlite)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

import outbox
from outbox import Message, TopicError, publish, publish_many


def _async_url(url: str) -> str:
    return url.replace("sqlite://", "sqlite+aiosqlite://", 1)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(_async_url(db_url))
    yield eng
    await eng.dispose()


async def _payloads(engine: AsyncEngine) -> list[object]:
    table = outbox.outbox_tables().outbox
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(table.c.payload).order_by(table.c.id))).scalars()
        return [json.loads(v) if isinstance(v, str) else v for v in rows]


async def test_publish_async_session_commit_and_rollback(engine: AsyncEngine) -> None:
    """An AsyncSession commit keeps its events; a rollback drops them."""
    async with AsyncSession(engine) as session, session.begin():
        message_id = await publish(session, "orders.created", {"n": 1}, key="o-1")
        await publish_many(session, [Message(topic="orders.created", payload={"n": 2})])
    async with AsyncSession(engine) as session:
        await publish(session, "orders.created", {"n": 3})
        await session.rollback()
    assert await _payloads(engine) == [{"n": 1}, {"n": 2}]
    assert message_id.version == 7


async def test_publish_async_exception_in_block_rolls_back(engine: AsyncEngine) -> None:
    """An exception inside `async with session.begin()` leaves no event."""
    with pytest.raises(RuntimeError):
        async with AsyncSession(engine) as session, session.begin():
            await publish(session, "orders.created", {"n": 1})
            raise RuntimeError
    assert await _payloads(engine) == []


async def test_publish_async_connection(engine: AsyncEngine) -> None:
    """An AsyncConnection joins its transaction like a Connection."""
    async with engine.begin() as conn:
        await publish(conn, "orders.created", {"n": 1})
    assert await _payloads(engine) == [{"n": 1}]


async def test_publish_async_validation_raises_before_await(engine: AsyncEngine) -> None:
    """Validation errors raise at the call, before anything is awaited, and the session goes on."""
    async with AsyncSession(engine) as session, session.begin():
        with pytest.raises(TopicError):
            publish(session, "no spaces", {})
        await publish(session, "ok", {"n": 1})
    assert await _payloads(engine) == [{"n": 1}]
