"""One contract for every broker's publish half: memory, SQL table (SQLite) and Redis Streams."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from brokers import Fence, Outcome, OutgoingEntry, Publisher, connect_publisher
from brokers.memory import MemoryBroker, MemoryPublisher
from outbox import BrokerError, FencedError
from tests._relay_support import sql_broker_entries


@dataclass
class Subject:
    publisher: Publisher
    read: Callable[[str], list[dict[str, str]]]
    has_incarnation: bool


@pytest.fixture(params=["memory", "sql_table", "redis_streams"])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    if request.param == "memory":
        broker = MemoryBroker()
        yield Subject(MemoryPublisher(broker), broker.entries, has_incarnation=True)
        return
    if request.param == "sql_table":
        url: str = request.getfixturevalue("sqlite_url")
        publisher = connect_publisher(url)
        yield Subject(publisher, lambda s: sql_broker_entries(url, s), has_incarnation=False)
        publisher.close()
        return
    redis_url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("stream_prefix")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    publisher = connect_publisher(redis_url, key_prefix=prefix)

    def read(stream: str) -> list[dict[str, str]]:
        return [fields for _, fields in client.xrange(prefix + stream)]

    yield Subject(_Prefixed(publisher, prefix), read, has_incarnation=True)
    publisher.close()
    client.close()


class _Prefixed:
    """Adds the test's stream prefix to Redis stream names so tests never share streams."""

    def __init__(self, inner: Publisher, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    @property
    def description(self) -> str:
        return self.inner.description

    def publish(self, entries, *, fences=(), incarnation=None):  # type: ignore[no-untyped-def]
        entries = [OutgoingEntry(self.prefix + e.stream, e.fields, e.order_key) for e in entries]
        return self.inner.publish(entries, fences=fences, incarnation=incarnation)

    def ping(self) -> None:
        self.inner.ping()

    def close(self) -> None:
        self.inner.close()


def _entries(n: int, stream: str = "orders") -> list[OutgoingEntry]:
    return [
        OutgoingEntry(stream, {"id": str(i), "data": f'{{"seq": {i}}}'}, order_key=f"k{i % 3}")
        for i in range(n)
    ]


def _token(subject: Subject) -> str | None:
    return subject.publisher.publish([]).incarnation


def test_publisher_appends_a_batch_in_order(subject: Subject) -> None:
    """Every entry of a batch is appended, in batch order, with a PUBLISHED outcome."""
    token = _token(subject)
    result = subject.publisher.publish(_entries(25), incarnation=token)
    assert [o.outcome for o in result.outcomes] == [Outcome.PUBLISHED] * 25
    assert [e["id"] for e in subject.read("orders")] == [str(i) for i in range(25)]


def test_publisher_refuses_a_stale_fence_and_writes_nothing(subject: Subject) -> None:
    """After epoch 5 was seen for a fence, a batch at epoch 4 raises FencedError and appends nothing."""
    token = _token(subject)
    subject.publisher.publish(_entries(2), fences=[Fence("outbox:0", 5)], incarnation=token)
    with pytest.raises(FencedError):
        subject.publisher.publish(_entries(3), fences=[Fence("outbox:1", 9), Fence("outbox:0", 4)],
                                  incarnation=token)  # fmt: skip
    assert len(subject.read("orders")) == 2
    subject.publisher.publish(_entries(1), fences=[Fence("outbox:0", 5)], incarnation=token)  # same epoch: ok
    subject.publisher.publish([], fences=[Fence("outbox:0", 6)], incarnation=token)  # advance with no entries
    with pytest.raises(FencedError):
        subject.publisher.publish(_entries(1), fences=[Fence("outbox:0", 5)], incarnation=token)
    assert len(subject.read("orders")) == 3


def test_publisher_reports_its_incarnation(subject: Subject) -> None:
    """Brokers that can lose data report a token and write nothing for a caller with another one."""
    token = _token(subject)
    if not subject.has_incarnation:
        assert token is None
        return
    assert token
    result = subject.publisher.publish(_entries(2), incarnation="not-the-token")
    assert result.incarnation == token
    assert [o.outcome for o in result.outcomes] == [Outcome.SKIPPED, Outcome.SKIPPED]
    assert subject.read("orders") == []


def test_publisher_ping_answers_and_writes_nothing(subject: Subject) -> None:
    """`ping` is a round trip that creates no stream and no entry; publishing afterwards works as before."""
    subject.publisher.ping()
    assert subject.read("orders") == []
    subject.publisher.publish(_entries(1), incarnation=_token(subject))
    assert [e["id"] for e in subject.read("orders")] == ["0"]


@pytest.mark.parametrize("kind", ["memory", "redis_streams"])
def test_publisher_ping_of_a_dead_broker_is_a_broker_error(kind: str) -> None:
    """A broker that does not answer makes `ping` raise BrokerError (what `status` and `relay --once` report)."""
    if kind == "memory":
        broker = MemoryBroker()
        broker.fail_next()
        publisher: Publisher = MemoryPublisher(broker)
    else:
        publisher = connect_publisher("redis://:s3cret@127.0.0.1:1/0")
    with pytest.raises(BrokerError) as refused:
        publisher.ping()
    assert "s3cret" not in str(refused.value)
    publisher.close()
