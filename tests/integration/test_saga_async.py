"""With an AsyncSession the orchestrator runs through ``run_sync`` and saga.reply is awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

import saga
from tests._saga import INVENTORY, PAYMENT, REPLIES, domain, instance, last, messages, orchestrator


@pytest.fixture
async def engines(db_url: str) -> AsyncIterator[tuple[AsyncEngine, sa.Engine]]:
    sync = sa.create_engine(db_url)
    domain.create_all(sync)
    eng = create_async_engine(db_url.replace("sqlite://", "sqlite+aiosqlite://", 1))
    yield eng, sync
    await eng.dispose()
    sync.dispose()


async def test_saga_async_session_runs_the_saga_to_completion(engines: tuple[AsyncEngine, sa.Engine]) -> None:
    """start/handle_reply through AsyncSession.run_sync and an awaited saga.reply complete the saga."""
    engine, sync = engines
    orch = orchestrator()
    async with AsyncSession(engine) as session, session.begin():
        saga_id = await session.run_sync(orch.start, "order", {"order_id": "o-a", "sku": "s", "amount": "1"})
    for topic in (INVENTORY, PAYMENT):
        command = last(sync, topic)
        async with AsyncSession(engine) as session, session.begin():
            reply_id = await saga.reply(session, command, ok=True)
        (reply,) = [m for m in messages(sync, REPLIES) if m.id == reply_id]
        async with AsyncSession(engine) as session, session.begin():
            outcome = await session.run_sync(orch.handle_reply, reply)
        assert outcome.applied
    assert instance(sync, saga_id).state is saga.SagaState.COMPLETED
