"""Handlers that break the contract fail their message, against real Redis and PostgreSQL (issue #9)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

import inbox
import outbox
from brokers import StreamLayout, connect_subscriber
from outbox import Envelope
from tests._inbox import count_effects, domain, effect, entry, fast_config, record_effect


@pytest.fixture
def app_db(pg_url: str) -> str:
    engine = create_engine(pg_url)
    domain.create_all(engine)
    outbox.metadata.create_all(engine)
    engine.dispose()
    return pg_url


async def _consume_one(
    handler: Callable[..., Any], db: str, redis_url: str, client: redis.Redis, prefix: str, mode: inbox.Mode
) -> list[inbox.DeadLetter]:
    layout = StreamLayout(prefix=prefix, default_partitions=1)
    (stream,) = layout.streams_of("orders.created")
    client.xadd(stream, entry(payload={"n": 1}))
    client.xadd(stream, entry(payload={"n": 2}))
    registry = inbox.Registry()
    registry.add("orders.created", handler)
    runner = inbox.ConsumerRunner(
        registry,
        db=db,
        subscriber=connect_subscriber(redis_url),
        config=fast_config("billing", layout=layout, mode=mode, max_deliveries=5),
    )
    engine = create_engine(db)
    task = asyncio.create_task(runner.run())
    try:
        deadline = time.monotonic() + 20
        while len(inbox.select_dead_letters(engine)) < 2:
            assert not task.done(), task.result()
            assert time.monotonic() < deadline, "messages were not dead-lettered in time"
            await asyncio.sleep(0.05)
        return inbox.select_dead_letters(engine)
    finally:
        runner.stop()
        await task
        await runner.aclose()
        engine.dispose()


def _outbox_rows(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(outbox.outbox_tables().outbox)).scalar_one()
            )
    finally:
        engine.dispose()


def _committing(message: Envelope, session: Session) -> None:
    record_effect(message, session)
    try:
        session.commit()
    except inbox.HandlerContractError:
        pass  # swallowing the refusal does not rescue the message


async def _committing_async(message: Envelope, session: AsyncSession) -> None:
    await session.execute(insert(effect).values(message_id=str(message.id), n=1))
    await session.commit()


@pytest.mark.parametrize("mode", [inbox.Mode.MESSAGE, inbox.Mode.BATCH])
@pytest.mark.parametrize("handler", [_committing, _committing_async], ids=["sync", "async"])
async def test_handler_commit_fails_message_with_effects_rolled_back(
    app_db: str,
    redis_url: str,
    redis_client: redis.Redis,
    stream_prefix: str,
    mode: str,
    handler: Callable[..., Any],
) -> None:
    """A handler calling session.commit() is dead-lettered at once with that reason, no effect kept (#9)."""
    with capture_logs() as logs:
        letters = await _consume_one(handler, app_db, redis_url, redis_client, stream_prefix, mode)
    assert count_effects(app_db) == 0
    assert {d.deliveries for d in letters} == {1}
    assert all("handler called session.commit()" in d.error for d in letters), letters
    assert [e["event"] for e in logs].count("inbox.handler_failed") >= 2


async def _follow_up(message: Envelope, session: AsyncSession) -> None:
    await inbox.publish_follow_up_async(session, message, "payments.charged", {"ok": True})


def _returns_coroutine(message: Envelope, session: Session) -> Coroutine[Any, Any, None]:
    record_effect(message, session)
    return _follow_up(message, session)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", [inbox.Mode.MESSAGE, inbox.Mode.BATCH])
async def test_handler_returning_coroutine_fails_message(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str, mode: inbox.Mode
) -> None:
    """A sync handler returning an un-awaited coroutine is dead-lettered, not marked handled (#9)."""
    letters = await _consume_one(_returns_coroutine, app_db, redis_url, redis_client, stream_prefix, mode)
    assert count_effects(app_db) == 0
    assert _outbox_rows(app_db) == 0
    assert {d.deliveries for d in letters} == {1}
    assert all("returned an un-awaited coroutine" in d.error for d in letters), letters


async def _forgets_await(message: Envelope, session: AsyncSession) -> None:
    await session.execute(insert(effect).values(message_id=str(message.id), n=1))
    inbox.publish_follow_up_async(session, message, "payments.charged", {"ok": True})  # no await


@pytest.mark.parametrize("mode", [inbox.Mode.MESSAGE, inbox.Mode.BATCH])
async def test_handler_unawaited_publish_fails_message(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str, mode: inbox.Mode
) -> None:
    """An async handler that forgets to await its follow-up publish is dead-lettered, not handled (#9)."""
    letters = await _consume_one(_forgets_await, app_db, redis_url, redis_client, stream_prefix, mode)
    assert count_effects(app_db) == 0
    assert _outbox_rows(app_db) == 0
    assert all("did not await a publish call" in d.error for d in letters), letters
