"""One contract for every broker's publish half: memory, SQL table (SQLite), Redis Streams, Redis Cluster,
Redis Sentinel, NATS JetStream and Kafka."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from brokers import EntryStatus, Fence, OutgoingEntry, Publisher, connect_publisher
from brokers.memory import MemoryBroker, MemoryPublisher
from outbox import BrokerError, FencedError
from tests._kafka import create_topic, read_fields
from tests._nats import nats_entries
from tests._redis_cluster import RedisClusterServer
from tests._redis_sentinel import RedisSentinelSetup
from tests._relay_support import sql_broker_entries


@dataclass
class Subject:
    publisher: Publisher
    read: Callable[[str], list[dict[str, str]]]
    has_incarnation: bool
    # Redis Cluster keeps fences per stream, in the stream's slot: a batch with
    # no entries has no stream to advance them on (docs/brokers.md).
    advances_fences_without_entries: bool = True


@pytest.fixture(
    params=[
        "memory",
        "sql_table",
        "redis_streams",
        "redis_cluster",
        "redis_sentinel",
        "nats_jetstream",
        "kafka",
        "kafka_transactional",
    ]
)
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
    if request.param.startswith("kafka"):
        yield from _kafka_subject(request, transactional=request.param == "kafka_transactional")
        return
    prefix: str = request.getfixturevalue("stream_prefix")
    if request.param == "nats_jetstream":
        url = request.getfixturevalue("nats_url")
        publisher = connect_publisher(url, key_prefix=prefix)
        yield Subject(
            _Prefixed(publisher, prefix), lambda s: nats_entries(url, prefix + s), has_incarnation=True
        )
        publisher.close()
        return
    if request.param == "redis_cluster":
        cluster: RedisClusterServer = request.getfixturevalue("redis_cluster")
        cluster_client = cluster.client()
        cluster_publisher = connect_publisher(cluster.url, key_prefix=prefix)

        def read_cluster(stream: str) -> list[dict[str, str]]:
            return [_decoded(fields) for _, fields in cluster_client.xrange(f"{prefix}{{{stream}}}")]

        tagged = _Prefixed(cluster_publisher, prefix, hash_tag=True)
        yield Subject(tagged, read_cluster, has_incarnation=True, advances_fences_without_entries=False)
        cluster_publisher.close()
        cluster_client.close()
        return
    if request.param == "redis_sentinel":
        sentinel: RedisSentinelSetup = request.getfixturevalue("redis_sentinel")
        redis_url = sentinel.master.url  # read the master directly
        publisher = connect_publisher(f"{sentinel.url}?durability=replicas=1", key_prefix=prefix)
    else:
        redis_url = request.getfixturevalue("redis_url")
        publisher = connect_publisher(redis_url, key_prefix=prefix)
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    def read(stream: str) -> list[dict[str, str]]:
        return [fields for _, fields in client.xrange(prefix + stream)]

    yield Subject(_Prefixed(publisher, prefix), read, has_incarnation=True)
    publisher.close()
    client.close()


def _kafka_subject(request: pytest.FixtureRequest, *, transactional: bool) -> Iterator[Subject]:
    bootstrap: str = request.getfixturevalue("kafka_server").bootstrap
    prefix: str = request.getfixturevalue("kafka_prefix")
    create_topic(bootstrap, prefix + "orders")  # one partition, as a consumer of the layout creates it
    options = "?transactional=true" if transactional else ""
    publisher = connect_publisher(f"kafka://{bootstrap}{options}", key_prefix=prefix)
    yield Subject(
        _Prefixed(publisher, prefix), lambda s: read_fields(bootstrap, prefix + s), has_incarnation=True
    )
    publisher.close()


class _Prefixed:
    """Adds the test's stream prefix to stream names so tests never share streams."""

    def __init__(self, inner: Publisher, prefix: str, *, hash_tag: bool = False) -> None:
        self.inner, self.prefix, self.hash_tag = inner, prefix, hash_tag

    @property
    def description(self) -> str:
        return self.inner.description

    def publish(self, entries, *, fences=(), incarnation=None):  # type: ignore[no-untyped-def]
        entries = [OutgoingEntry(self._name(e.stream), e.fields, e.order_key) for e in entries]
        return self.inner.publish(entries, fences=fences, incarnation=incarnation)

    def _name(self, stream: str) -> str:
        return f"{self.prefix}{{{stream}}}" if self.hash_tag else self.prefix + stream

    def ping(self) -> None:
        self.inner.ping()

    def close(self) -> None:
        self.inner.close()


def _decoded(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in fields.items()}


def _entries(n: int, stream: str = "orders", *, first: int = 0) -> list[OutgoingEntry]:
    # Ids are unique per test: a broker that de-duplicates by message id (NATS) drops repeats.
    return [
        OutgoingEntry(stream, {"id": str(i), "data": f'{{"seq": {i}}}'}, order_key=f"k{i % 3}")
        for i in range(first, first + n)
    ]


def _token(subject: Subject) -> str | None:
    return subject.publisher.publish([]).incarnation


def test_publisher_appends_a_batch_in_order(subject: Subject) -> None:
    """Every entry of a batch is appended, in batch order, with a PUBLISHED outcome."""
    token = _token(subject)
    result = subject.publisher.publish(_entries(25), incarnation=token)
    assert [o.outcome for o in result.outcomes] == [EntryStatus.PUBLISHED] * 25
    assert [e["id"] for e in subject.read("orders")] == [str(i) for i in range(25)]


def test_publisher_refuses_a_stale_fence_and_writes_nothing(subject: Subject) -> None:
    """After epoch 5 was seen for a fence, a batch at epoch 4 raises FencedError and appends nothing."""
    token = _token(subject)
    subject.publisher.publish(_entries(2), fences=[Fence("outbox:0", 5)], incarnation=token)
    with pytest.raises(FencedError):
        subject.publisher.publish(_entries(3), fences=[Fence("outbox:1", 9), Fence("outbox:0", 4)],
                                  incarnation=token)  # fmt: skip
    assert len(subject.read("orders")) == 2
    subject.publisher.publish(
        _entries(1, first=2), fences=[Fence("outbox:0", 5)], incarnation=token
    )  # same epoch: ok
    if subject.advances_fences_without_entries:
        subject.publisher.publish([], fences=[Fence("outbox:0", 6)], incarnation=token)
    else:
        subject.publisher.publish(_entries(1, first=3), fences=[Fence("outbox:0", 6)], incarnation=token)
    with pytest.raises(FencedError):
        subject.publisher.publish(_entries(1, first=4), fences=[Fence("outbox:0", 5)], incarnation=token)
    assert len(subject.read("orders")) == (3 if subject.advances_fences_without_entries else 4)


def test_publisher_reports_its_incarnation(subject: Subject) -> None:
    """Brokers that can lose data report a token and write nothing for a caller with another one."""
    token = _token(subject)
    if not subject.has_incarnation:
        assert token is None
        return
    assert token
    result = subject.publisher.publish(_entries(2), incarnation="not-the-token")
    assert result.incarnation == token
    assert [o.outcome for o in result.outcomes] == [EntryStatus.SKIPPED, EntryStatus.SKIPPED]
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
