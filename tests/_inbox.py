"""Helpers for the inbox unit tests: an in-memory SQLite engine and wire entries."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import tempfile
import time
import uuid
from collections.abc import Callable

import uuid_utils.compat as uuid_utils
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, create_engine, func, insert, select
from sqlalchemy.orm import Session

import inbox.tables  # noqa: F401 - registers the inbox tables in metadata
import outbox
from brokers.sql_table import configure_sqlite
from inbox import ConsumerConfig
from outbox import Envelope
from outbox.tables import metadata


def memory_engine() -> Engine:
    """A fresh SQLite file (WAL, busy timeout) with every toolkit table and the test domain table."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="outboxkit-inbox-")) / "app.db"
    engine = create_engine(f"sqlite:///{path}")
    configure_sqlite(engine)
    metadata.create_all(engine)
    domain.create_all(engine)
    return engine


def entry(
    topic: str = "orders.created",
    payload: object = None,
    *,
    key: str | None = None,
    type: str | None = None,  # noqa: A002 - CloudEvents name
    message_id: uuid.UUID | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """A wire entry as the relay would put it on the stream."""
    return outbox.encode_entry(
        message_id=message_id or uuid_utils.uuid7(),
        topic=topic,
        type=type or topic,
        source="tests",
        key=key,
        time=dt.datetime.now(dt.UTC),
        headers_json=json.dumps(headers or {}),
        data_json=json.dumps(payload),
    )


domain = MetaData()
"""Tables of the handlers used in tests (not toolkit tables)."""

effect = Table(
    "test_effect",
    domain,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(64), nullable=False),
    Column("key", String(64), nullable=True),
    Column("n", Integer, nullable=True),
)


def fast_config(group: str, **overrides: object) -> ConsumerConfig:
    """A consumer config with short delays, for tests."""
    values: dict[str, object] = {
        "group": group,
        "retry_delay": dt.timedelta(milliseconds=1),
        "max_retry_delay": dt.timedelta(milliseconds=5),
        "block": dt.timedelta(milliseconds=100),
        "lease_ttl": dt.timedelta(seconds=2),
        "claim_idle": dt.timedelta(seconds=1),
        "max_deliveries": 3,
        "shutdown_timeout": dt.timedelta(seconds=5),
    }
    values.update(overrides)
    return ConsumerConfig(**values)  # type: ignore[arg-type]


def record_effect(message: Envelope, session: Session) -> None:
    """A handler effect: one row per handled message."""
    payload = message.payload if isinstance(message.payload, dict) else {}
    session.execute(insert(effect).values(message_id=str(message.id), key=message.key, n=payload.get("n")))


def count_effects(url_or_engine: str | Engine) -> int:
    """Rows in the test domain table."""
    engine = create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(effect)).scalar() or 0)
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            msg = f"condition not met within {timeout}s"
            raise AssertionError(msg)
        time.sleep(interval)
