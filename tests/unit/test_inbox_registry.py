from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import inbox
from outbox import ConfigError, Envelope, HeadersError, ValidationError
from tests._inbox import memory_engine


def _message(topic: str = "orders.created", type_: str | None = None, **headers: str) -> Envelope:
    return Envelope(
        id=uuid.uuid4(),
        topic=topic,
        type=type_ or topic,
        source="t",
        key="k",
        time=dt.datetime.now(dt.UTC),
        headers=headers,
        payload={"n": 1},
    )


def test_registry_matches_type_before_catch_all() -> None:
    """A handler bound to a type wins over the topic's catch-all handler."""
    registry = inbox.Registry()

    @registry.handler("orders.created")
    def any_type(message: Envelope, session: Session) -> None: ...

    @registry.handler("orders.created", types=["OrderCreated"])
    def created(message: Envelope, session: Session) -> None: ...

    assert registry.match(_message(type_="OrderCreated")).func is created  # type: ignore[union-attr]
    assert registry.match(_message(type_="Other")).func is any_type  # type: ignore[union-attr]
    assert registry.match(_message(topic="payments.done")) is None
    assert registry.topics == ["orders.created"]
    assert len(registry) == 2


def test_registry_refuses_overlapping_handlers() -> None:
    """Two handlers that could take the same message are refused at registration."""
    registry = inbox.Registry()
    registry.add("t", lambda m, s: None, types="A")
    with pytest.raises(ConfigError, match="would both handle"):
        registry.add("t", lambda m, s: None, types=["A", "B"])
    registry.add("t", lambda m, s: None)
    with pytest.raises(ConfigError, match="would both handle"):
        registry.add("t", lambda m, s: None)


def test_registry_refuses_bad_topic_and_types() -> None:
    """Invalid topics and empty type lists are configuration errors."""
    registry = inbox.Registry()
    with pytest.raises(ConfigError):
        registry.add("bad topic!", lambda m, s: None)
    with pytest.raises(ConfigError):
        registry.add("t", lambda m, s: None, types=[])


def test_registry_detects_async_handlers() -> None:
    """``async def`` handlers are recognised so the runner gives them an AsyncSession."""
    registry = inbox.Registry()

    @registry.handler("t")
    async def handler(message: Envelope, session: object) -> None: ...

    assert registry.specs[0].is_async


def test_process_runs_handler_once_per_consumer() -> None:
    """The second process() of one message id is a duplicate and does not call the handler."""
    engine = memory_engine()
    calls: list[str] = []
    message = _message()
    for _ in range(3):
        with Session(engine) as session, session.begin():
            inbox.process(session, "billing", message, lambda m, s: calls.append("billing"))
    with Session(engine) as session, session.begin():
        outcome = inbox.process(session, "shipping", message, lambda m, s: calls.append("shipping"))
    assert outcome is inbox.ProcessResult.PROCESSED
    assert calls == ["billing", "shipping"]


def test_process_rolled_back_is_not_recorded() -> None:
    """A handler that raises leaves no inbox row once the caller rolls back, so a retry runs it."""
    engine = memory_engine()
    message = _message()

    def failing(m: Envelope, s: Session) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
        inbox.process(session, "billing", message, failing)
    with Session(engine) as session, session.begin():
        assert inbox.process(session, "billing", message, lambda m, s: None) is inbox.ProcessResult.PROCESSED
        rows = session.execute(select(func.count()).select_from(inbox.inbox)).scalar()
    assert rows == 1


def test_record_message_accepts_foreign_ids() -> None:
    """Foreign ids (webhook deliveries, Kafka offsets) dedup like message ids."""
    engine = memory_engine()
    with engine.begin() as conn:
        assert inbox.record_message(conn, "webhooks", "stripe:evt_123")
        assert not inbox.record_message(conn, "webhooks", "stripe:evt_123")
    with pytest.raises(ValidationError), engine.begin() as conn:
        inbox.record_message(conn, "", "x")


def test_record_messages_returns_only_new_ids() -> None:
    """The multi-row insert reports which ids were new."""
    engine = memory_engine()
    with engine.begin() as conn:
        inbox.record_message(conn, "c", "a")
        assert inbox.record_messages(conn, "c", [("a", None), ("b", "t"), ("c", "t")]) == {"b", "c"}


def test_follow_up_headers_copy_correlation_and_set_causation() -> None:
    """A follow-up keeps the correlation id and names its cause."""
    first = _message()
    assert inbox.follow_up_headers(first) == {"correlation_id": str(first.id), "causation_id": str(first.id)}
    second = _message(correlation_id="corr-1")
    headers = inbox.follow_up_headers(second, {"tenant": "a"})
    assert headers == {"correlation_id": "corr-1", "causation_id": str(second.id), "tenant": "a"}


@pytest.mark.parametrize("name", ["correlation_id", "causation_id"])
def test_follow_up_headers_refuse_a_caller_overriding_the_flow(name: str) -> None:
    """The message being handled decides both flow headers; another value is an error, not a silent choice."""
    cause = _message(correlation_id="corr-1")
    with pytest.raises(HeadersError, match=name):
        inbox.follow_up_headers(cause, {name: "something-else"})
    same = {"correlation_id": "corr-1", "causation_id": str(cause.id)}[name]
    assert inbox.follow_up_headers(cause, {name: same})[name] == same  # restating it is fine


def test_a_reply_chain_names_each_link_and_keeps_the_flow() -> None:
    """command -> reply -> next command: every causation id is the previous message, one correlation id."""
    command = _message(correlation_id="order-7")
    reply = _message(**inbox.follow_up_headers(command))
    next_command = _message(**inbox.follow_up_headers(reply))
    assert reply.causation_id == str(command.id)
    assert next_command.causation_id == str(reply.id)
    assert {command.correlation_id, reply.correlation_id, next_command.correlation_id} == {"order-7"}


def test_consumer_config_validates() -> None:
    """Bad settings are refused with ConfigError."""
    with pytest.raises(ConfigError):
        inbox.ConsumerConfig(group="bad group")
    with pytest.raises(ConfigError):
        inbox.ConsumerConfig(group="g", max_deliveries=0)
    with pytest.raises(ConfigError):
        inbox.ConsumerConfig(group="g", block=dt.timedelta(0))
    config = inbox.ConsumerConfig(group="g", claim_idle=dt.timedelta(seconds=10), max_deliveries=3)
    assert config.redelivery_horizon == dt.timedelta(seconds=60) + config.lease_ttl


def test_registry_refuses_handler_with_wrong_signature() -> None:
    """A handler that cannot take (message, session) is refused when decorated, naming it (issue #9)."""
    registry = inbox.Registry()

    def charge(message: Envelope) -> None: ...

    with pytest.raises(ConfigError, match=r"charge must accept \(message, session\)"):
        registry.handler("orders.created")(charge)  # type: ignore[arg-type]
    assert len(registry) == 0


def test_publish_follow_up_refuses_async_session() -> None:
    """The sync follow-up given an AsyncSession raises instead of writing nothing (issue #9)."""
    engine = create_async_engine("sqlite+aiosqlite://")
    session = AsyncSession(engine)
    with pytest.raises(ValidationError, match="use `await publish_follow_up_async"):
        inbox.publish_follow_up(session, _message(), "payments.charged", {"ok": True})  # type: ignore[arg-type]


async def test_publish_follow_up_async_refuses_sync_session() -> None:
    """The async follow-up given a sync Session raises instead of publishing outside the await (issue #9)."""
    with Session(memory_engine()) as session, pytest.raises(ValidationError, match="use publish_follow_up"):
        await inbox.publish_follow_up_async(session, _message(), "payments.charged", {"ok": True})  # type: ignore[arg-type]
