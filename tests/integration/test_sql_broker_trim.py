"""The SQL-table broker trims what every group acknowledged, and honours a max length (issue #9)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from brokers import OutgoingEntry, connect_publisher, connect_subscriber
from brokers.sql_table import SqlTableSubscriber
from tests._inbox import entry
from tests._relay_support import sql_broker_entries

STREAM = "orders.created"
NO_WAIT = dt.timedelta(milliseconds=10)


def _publish(url: str, count: int, *, max_len: int | None = None) -> None:
    publisher = connect_publisher(url, max_len=max_len)
    publisher.publish([OutgoingEntry(STREAM, entry(payload={"n": n})) for n in range(count)])
    publisher.close()


def _left(url: str) -> list[str]:
    return [e["data"] for e in sql_broker_entries(url, STREAM)]


@pytest.fixture
async def subscriber(db_url: str) -> AsyncIterator[SqlTableSubscriber]:
    sub = connect_subscriber(db_url)
    assert isinstance(sub, SqlTableSubscriber)
    yield sub
    await sub.aclose()


async def _read_ack(sub: SqlTableSubscriber, group: str, count: int, *, ack: int | None = None) -> None:
    got = await sub.read(STREAM, group, "c1", count=count, block=NO_WAIT)
    await sub.ack(STREAM, group, [d.entry_id for d in got[: len(got) if ack is None else ack]])


async def test_sql_broker_trim_deletes_entries_once_every_group_acked(
    db_url: str, subscriber: SqlTableSubscriber
) -> None:
    """Entries leave outboxkit_stream_entry once every group acknowledged them, and never before (issue #9)."""
    await subscriber.ensure_group(STREAM, "billing")
    await subscriber.ensure_group(STREAM, "shipping")
    _publish(db_url, 5)
    await _read_ack(subscriber, "billing", 5)
    assert len(_left(db_url)) == 5  # shipping has not read any of them: it keeps them all
    await _read_ack(subscriber, "shipping", 3)
    assert _left(db_url) == ['{"n": 3}', '{"n": 4}']  # both groups acked the first three
    await _read_ack(subscriber, "shipping", 2, ack=1)  # n=4 read, still pending: kept
    assert _left(db_url) == ['{"n": 4}']
    claimed = await subscriber.claim(STREAM, "shipping", "c2", min_idle=dt.timedelta(0), count=10)
    assert [d.fields["data"] for d in claimed] == ['{"n": 4}']  # a pending entry is still deliverable
    await subscriber.ack(STREAM, "shipping", [claimed[0].entry_id])
    assert _left(db_url) == []


async def test_sql_broker_trim_keeps_entries_of_streams_without_groups(
    db_url: str, subscriber: SqlTableSubscriber
) -> None:
    """A stream no group reads keeps its entries, so a group created later still gets them (issue #9)."""
    _publish(db_url, 3)
    other = "orders.cancelled"
    await subscriber.ensure_group(other, "billing")
    publisher = connect_publisher(db_url)
    publisher.publish([OutgoingEntry(other, entry(topic=other))])
    publisher.close()
    got = await subscriber.read(other, "billing", "c1", count=10, block=NO_WAIT)
    await subscriber.ack(other, "billing", [d.entry_id for d in got])
    assert len(_left(db_url)) == 3
    late = await subscriber.read(STREAM, "late", "c1", count=10, block=NO_WAIT)
    assert len(late) == 3


async def test_sql_broker_max_len_keeps_the_newest_entries(
    db_url: str, subscriber: SqlTableSubscriber
) -> None:
    """With max_len (--stream-maxlen) every publish trims the stream to its newest entries, read or not (issue #9)."""
    await subscriber.ensure_group(STREAM, "billing")
    _publish(db_url, 5, max_len=3)
    _publish(db_url, 2, max_len=3)
    assert len(_left(db_url)) == 3
    got = await subscriber.read(STREAM, "billing", "c1", count=10, block=NO_WAIT)
    assert [d.fields["data"] for d in got] == ['{"n": 4}', '{"n": 0}', '{"n": 1}']
