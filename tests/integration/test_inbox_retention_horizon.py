"""The inbox retention check asks the broker how far back it can redeliver (issue #9)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine
from structlog.testing import capture_logs

import inbox
from brokers import StreamLayout, connect_subscriber
from tests._inbox import count_effects, domain, entry, fast_config, record_effect

HOUR_S = 3600
EVENT = "inbox.retention_shorter_than_stream"


@pytest.fixture
def app_db(pg_url: str) -> str:
    engine = create_engine(pg_url)
    domain.create_all(engine)
    engine.dispose()
    return pg_url


def _registry() -> inbox.Registry:
    registry = inbox.Registry()
    registry.add("orders.created", record_effect)
    return registry


async def _start(app_db: str, redis_url: str, prefix: str, retention_h: int) -> list[dict[str, Any]]:
    """Run one consumer to the end of its streams; return the retention warnings it logged."""
    config = fast_config(
        "billing", layout=StreamLayout(prefix=prefix), retention=dt.timedelta(hours=retention_h)
    )
    runner = inbox.ConsumerRunner(
        _registry(), db=app_db, subscriber=connect_subscriber(redis_url), config=config
    )
    with capture_logs() as logs:
        await runner.run(once=True)
    await runner.aclose()
    return [e for e in logs if e["event"] == EVENT]


async def test_inbox_retention_check_warns_once_with_the_broker_figures(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """A stream holding entries older than the window (one still pending) is reported once, with Redis's own figures, until the settings change (issue #9)."""
    stream = f"{stream_prefix}orders.created"
    old_ms = int(time.time() * 1000) - 3 * HOUR_S * 1000
    redis_client.xadd(stream, entry(payload={"n": 1}), id=f"{old_ms}-0")  # type: ignore[arg-type]
    redis_client.xadd(stream, entry(payload={"n": 2}), id=f"{old_ms + 1000}-0")  # type: ignore[arg-type]
    redis_client.xgroup_create(stream, "billing", id="0")
    redis_client.xreadgroup("billing", "gone", {stream: ">"}, count=1)  # a consumer that died: pending
    redis_client.xadd(stream, entry(payload={"n": 3}))

    [warning] = await _start(app_db, redis_url, stream_prefix, retention_h=1)
    assert count_effects(app_db) == 3  # the check only warns: everything is consumed
    assert warning["stream"] == stream
    assert warning["entries"] == 3
    assert warning["pending"] == 1
    assert abs(warning["oldest_entry_age_s"] - 3 * HOUR_S) < 60
    assert abs(warning["oldest_pending_age_s"] - 3 * HOUR_S) < 60
    assert warning["retention_s"] == HOUR_S
    assert warning["removed_entries"] == 0  # Redis 7 reports what trimming deleted

    assert await _start(app_db, redis_url, stream_prefix, retention_h=1) == []  # restart: not again
    assert len(await _start(app_db, redis_url, stream_prefix, retention_h=2)) == 1  # new settings: again
    # The session's Redis is shared by every test: look at this test's marks only (they name its stream).
    marks = [
        k.decode() for k in redis_client.scan_iter(match="*outboxkit:mark:*") if k.decode().endswith(stream)
    ]
    assert len(marks) == 2  # one per window
    assert all(k.startswith(stream_prefix) for k in marks)  # the mark carries the prefix too


async def test_inbox_retention_check_is_quiet_when_the_broker_keeps_less(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """Entries younger than the window give no warning, whatever the consumer settings (issue #9)."""
    stream = f"{stream_prefix}orders.created"
    redis_client.xadd(stream, entry(payload={"n": 1}))  # type: ignore[arg-type]
    assert await _start(app_db, redis_url, stream_prefix, retention_h=1) == []
    assert count_effects(app_db) == 1
