"""publish writes outbox rows in the caller's transaction: they exist iff it commits."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import outbox
from outbox import (
    HeadersError,
    KeyTooLongError,
    Message,
    OutboxConfig,
    PayloadTooLargeError,
    SchemaMissingError,
    SerializationError,
    TopicError,
    ValidationError,
    publish,
    publish_many,
)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(db_url)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id TEXT PRIMARY KEY, total TEXT NOT NULL)"))
    yield eng
    eng.dispose()


def _rows(engine: sa.Engine) -> list[sa.Row[tuple[object, ...]]]:
    table = outbox.outbox_tables().outbox
    with engine.connect() as conn:
        return list(conn.execute(sa.select(table).order_by(table.c.id)))


def _orders(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one())


def _doc(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value


def test_publish_commit_writes_row_with_envelope_fields(engine: sa.Engine) -> None:
    """After commit exactly the published row exists, every envelope field intact."""
    with Session(engine) as session, session.begin():
        session.execute(sa.text("INSERT INTO orders VALUES ('o-1', '9.90')"))
        message_id = publish(
            session,
            "orders.created",
            {"order_id": "o-1", "total": Decimal("9.90"), "items": [1, 2]},
            key="o-1",
            type="OrderCreated",
            headers={"correlation_id": "c-1"},
        )
    [row] = _rows(engine)
    assert isinstance(message_id, uuid.UUID)
    assert message_id.version == 7
    assert row.message_id == message_id
    assert row.topic == "orders.created"
    assert row.key == "o-1"
    assert row.key_hash == 0xCD3E0FDA  # CRC-32 of b"o-1", computed by hand with the IEEE polynomial
    assert row.type == "OrderCreated"
    assert row.source == "outboxkit"
    assert _doc(row.headers) == {"correlation_id": "c-1"}
    assert _doc(row.payload) == {"order_id": "o-1", "total": "9.90", "items": [1, 2]}
    assert row.attempts == 0
    assert row.published_at is None
    assert row.available_at == row.created_at


def test_publish_rollback_leaves_no_row(engine: sa.Engine) -> None:
    """A rolled-back transaction leaves neither its data nor its event."""
    with Session(engine) as session:
        session.execute(sa.text("INSERT INTO orders VALUES ('o-1', '9.90')"))
        publish(session, "orders.created", {"order_id": "o-1"}, key="o-1")
        session.rollback()
    assert _rows(engine) == []
    assert _orders(engine) == 0


def test_publish_exception_inside_begin_block_leaves_no_row(engine: sa.Engine) -> None:
    """An exception raised in the user's `with session.begin()` block rolls the event back too."""
    with pytest.raises(RuntimeError, match="boom"), Session(engine) as session, session.begin():
        session.execute(sa.text("INSERT INTO orders VALUES ('o-1', '9.90')"))
        publish(session, "orders.created", {"order_id": "o-1"})
        raise RuntimeError("boom")
    assert _rows(engine) == []
    assert _orders(engine) == 0


def test_publish_on_connection_joins_its_transaction(engine: sa.Engine) -> None:
    """A Core Connection works too; rows appear only when its transaction commits."""
    with engine.connect() as conn:
        with conn.begin():
            publish(conn, "orders.created", {"n": 1})
        trans = conn.begin()
        publish(conn, "orders.created", {"n": 2})
        trans.rollback()
    assert [_doc(r.payload) for r in _rows(engine)] == [{"n": 1}]


def test_publish_many_writes_rows_in_order(engine: sa.Engine) -> None:
    """publish_many writes every message in one statement, ids in input order and increasing."""
    messages = [Message(topic="stock.reserved", payload={"n": n}, key=f"k{n % 3}") for n in range(250)]
    with Session(engine) as session, session.begin():
        ids = publish_many(session, messages)
    rows = _rows(engine)
    assert [r.message_id for r in rows] == ids
    assert [_doc(r.payload) for r in rows] == [{"n": n} for n in range(250)]
    assert ids == sorted(ids)  # UUIDv7: time-ordered


def test_publish_delay_sets_available_at(engine: sa.Engine) -> None:
    """delay and available_at postpone the message; the stored time is UTC."""
    when = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with Session(engine) as session, session.begin():
        publish(session, "t", {}, delay=dt.timedelta(minutes=5))
        publish(session, "t", {}, available_at=when)
    first, second = _rows(engine)
    assert first.available_at - first.created_at == dt.timedelta(minutes=5)
    stored = (
        second.available_at.replace(tzinfo=dt.UTC)
        if second.available_at.tzinfo is None
        else second.available_at
    )
    assert stored == when


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"topic": "bad topic"}, TopicError),
        ({"topic": "x" * 250}, TopicError),
        ({"topic": ".starts-with-dot"}, TopicError),
        ({"topic": "orders:created"}, TopicError),
        ({"key": "k" * 256}, KeyTooLongError),
        ({"key": ""}, ValidationError),
        ({"key": 42}, ValidationError),
        ({"payload": {"x": float("nan")}}, SerializationError),
        ({"payload": {"x": "nul\x00"}}, SerializationError),
        ({"payload": {"x": "\ud83d"}}, SerializationError),
        ({"payload": {"x": object()}}, SerializationError),
        ({"payload": "x" * (1024 * 1024)}, PayloadTooLargeError),
        ({"headers": {"a": 1}}, HeadersError),
        ({"headers": [("a", "b")]}, HeadersError),
        ({"headers": {"a": "nul\x00"}}, HeadersError),
        ({"type": ""}, ValidationError),
        ({"delay": dt.timedelta(seconds=-1)}, ValidationError),
        ({"available_at": dt.datetime(2030, 1, 1)}, ValidationError),  # noqa: DTZ001 - naive on purpose
    ],
)
def test_publish_refuses_invalid_message_and_keeps_transaction_usable(
    engine: sa.Engine, kwargs: dict[str, object], error: type[Exception]
) -> None:
    """Each invalid message raises its typed error; the session still commits other work."""
    args: dict[str, object] = {"topic": "orders.created", "payload": {"ok": True}, **kwargs}
    with Session(engine) as session, session.begin():
        session.execute(sa.text("INSERT INTO orders VALUES ('o-1', '9.90')"))
        with pytest.raises(error):
            publish(session, **args)  # type: ignore[call-overload]
        publish(session, "orders.created", {"after": "error"})
    assert [_doc(r.payload) for r in _rows(engine)] == [{"after": "error"}]
    assert _orders(engine) == 1


def test_publish_many_refuses_whole_batch_on_one_bad_message(engine: sa.Engine) -> None:
    """One invalid message in publish_many writes none of them."""
    messages = [Message(topic="ok", payload=1), Message(topic="not ok", payload=2)]
    with Session(engine) as session, session.begin():
        with pytest.raises(TopicError):
            publish_many(session, messages)
    assert _rows(engine) == []


def test_publish_payload_size_limit_is_configurable(engine: sa.Engine) -> None:
    """max_payload_bytes counts UTF-8 bytes of the serialized payload."""
    config = OutboxConfig(max_payload_bytes=10)
    with Session(engine) as session, session.begin():
        publish(session, "t", "ąąą", config=config)  # '"ąąą"' is 8 bytes
        with pytest.raises(PayloadTooLargeError):
            publish(session, "t", "ąąąąą", config=config)  # 12 bytes with the quotes


def test_publish_with_custom_serializer_is_checked_like_default(engine: sa.Engine) -> None:
    """A custom serializer's output is checked for valid JSON and jsonb limits before insert."""
    with Session(engine) as session, session.begin():
        with pytest.raises(SerializationError):
            publish(session, "t", 1, config=OutboxConfig(serializer=lambda _: "{not json"))
        with pytest.raises(SerializationError):
            publish(session, "t", 1, config=OutboxConfig(serializer=lambda _: '{"a": NaN}'))
        with pytest.raises(SerializationError):
            publish(session, "t", 1, config=OutboxConfig(serializer=lambda _: '"\\u0000"'))
        publish(session, "t", 1, config=OutboxConfig(serializer=lambda _: '{"custom": true}'))
    assert [_doc(r.payload) for r in _rows(engine)] == [{"custom": True}]


def test_publish_without_tables_raises_schema_missing(sqlite_empty_url: str) -> None:
    """Publishing before `outboxkit migrate` tells the user to run it."""
    engine = sa.create_engine(sqlite_empty_url)
    with Session(engine) as session, pytest.raises(SchemaMissingError, match="outboxkit migrate"):
        publish(session, "t", {})
    engine.dispose()


def test_publish_refuses_non_sqlalchemy_target() -> None:
    """Anything but a Session/Connection is a ValidationError before any I/O."""
    with pytest.raises(ValidationError, match="Session"):
        publish(object(), "t", {})  # type: ignore[call-overload]


def test_publish_custom_table_and_schema_on_postgresql(pg_empty_url: str) -> None:
    """Configured table and schema names are used by migrate and publish alike."""
    config = OutboxConfig(table="events_out", schema="messaging")
    outbox.upgrade(pg_empty_url, config=config)
    engine = sa.create_engine(pg_empty_url)
    with Session(engine) as session, session.begin():
        publish(session, "t", {"n": 1}, config=config)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM messaging.events_out")).scalar_one() == 1
        assert conn.execute(sa.text("SELECT to_regclass('public.outbox')")).scalar_one() is None
    engine.dispose()


def test_publish_stores_json_documents_not_strings_on_postgresql(pg_url: str) -> None:
    """Payload and headers are jsonb documents, queryable with jsonb operators (not JSON strings)."""
    engine = sa.create_engine(pg_url)
    with Session(engine) as session, session.begin():
        publish(
            session, "orders.created", {"order_id": "o-1", "lines": [1, 2]}, headers={"correlation_id": "c"}
        )
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT jsonb_typeof(payload), payload->>'order_id', jsonb_typeof(headers),"
                " headers->>'correlation_id' FROM outbox"
            )
        ).one()
    engine.dispose()
    assert tuple(row) == ("object", "o-1", "object", "c")


def test_publish_empty_key_says_empty(engine: sa.Engine) -> None:
    """An empty key is refused with a message that says it is empty, not that it is the wrong type (#9)."""
    with Session(engine) as session, pytest.raises(ValidationError, match="key is empty"):
        publish(session, "orders.created", {"ok": True}, key="")


def test_publish_jsonb_rewrites_numbers_on_postgresql(pg_url: str) -> None:
    """PostgreSQL jsonb prints 1e300, -0.0 and 2.5e-08 in plain decimals, as docs/wire-format.md says (#9)."""
    eng = sa.create_engine(pg_url)
    try:
        with Session(eng) as session, session.begin():
            publish(session, "numbers", {"big": 1e300, "negzero": -0.0, "small": 2.5e-08})
        table = outbox.outbox_tables().outbox
        with eng.connect() as conn:
            text = conn.execute(sa.select(sa.cast(table.c.payload, sa.Text))).scalar_one()
    finally:
        eng.dispose()
    assert text == '{"big": 1' + "0" * 300 + ', "small": 0.000000025, "negzero": 0.0}'
