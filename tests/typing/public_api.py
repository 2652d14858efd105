"""Type-checked by mypy (not run): realistic use of the public API."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from outbox import Message, OutboxConfig, publish, publish_many, use_schema


def sync_use() -> uuid.UUID:
    engine = create_engine("sqlite://")
    with Session(engine) as session, session.begin():
        publish_many(session, [Message(topic="orders.created", payload={"n": 1})])
        return publish(
            session,
            "orders.created",
            {"order_id": "o-1", "total": "9.90"},
            key="o-1",
            type="OrderCreated",
            headers={"correlation_id": "c-1"},
            delay=dt.timedelta(seconds=5),
            config=OutboxConfig(table="outbox"),
        )


def schema_use() -> tuple[Engine, AsyncEngine]:
    engine: Engine = use_schema(create_engine("postgresql+psycopg://app@db/orders"), "messaging")
    async_engine: AsyncEngine = use_schema(create_async_engine("postgresql+psycopg://app@db/orders"), None)
    return engine, async_engine


async def async_use() -> uuid.UUID:
    engine = create_async_engine("sqlite+aiosqlite://")
    async with AsyncSession(engine) as session, session.begin():
        ids: list[uuid.UUID] = await publish_many(session, [Message(topic="t", payload=None)])
        del ids
        return await publish(session, "orders.created", {"order_id": "o-1"}, key="o-1")


def inbox_use() -> None:
    import inbox  # noqa: PLC0415 - keeps the outbox part of this file independent
    from outbox import Envelope  # noqa: PLC0415

    registry = inbox.Registry()

    @registry.handler("orders.created", types=["OrderCreated"])
    def charge(message: Envelope, session: Session) -> None:
        inbox.publish_follow_up(session, message, "payments.charged", {"ok": True}, key=message.key)

    @registry.handler("orders.cancelled")
    async def refund(message: Envelope, session: AsyncSession) -> None:
        await inbox.publish_follow_up_async(session, message, "payments.refunded", {"ok": True})

    engine = create_engine("sqlite://")
    with Session(engine) as session, session.begin():
        first: bool = inbox.record_message(session, "webhooks", "evt_1")
        del first
        message = Envelope(
            id=uuid.uuid4(),
            topic="orders.created",
            type="OrderCreated",
            source="s",
            key="k",
            time=dt.datetime.now(dt.UTC),
        )
        outcome: inbox.ProcessResult = inbox.process(session, "billing", message, charge)
        del outcome
    config = inbox.ConsumerConfig(group="billing", mode=inbox.Mode.BATCH, retention=dt.timedelta(days=3))
    del config
