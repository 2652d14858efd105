"""The Kafka publisher against Tansu: partitions, per-entry refusals, fences across publishers."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

import pytest

from brokers import EntryStatus, Fence, OutgoingEntry, PublishResult, connect_publisher
from brokers.kafka import KafkaPublisher
from outbox import BrokerAuthError, BrokerError, FencedError
from tests._kafka import KafkaEndpoint, KafkaServer, create_topic, read_records


@pytest.fixture
def topic(kafka_server: KafkaEndpoint, kafka_prefix: str) -> str:
    name = f"{kafka_prefix}orders"
    create_topic(kafka_server.bootstrap, name, partitions=4)
    return name


@pytest.fixture
def publishers(kafka_server: KafkaEndpoint, kafka_prefix: str) -> Iterator[list[KafkaPublisher]]:
    made: list[KafkaPublisher] = []
    yield made
    for publisher in made:
        publisher.close()


def _publisher(made: list[KafkaPublisher], url: str, prefix: str) -> KafkaPublisher:
    publisher = connect_publisher(url, key_prefix=prefix)
    assert isinstance(publisher, KafkaPublisher)
    made.append(publisher)
    return publisher


def _entry(stream: str, key: str, seq: int, data: str | None = None) -> OutgoingEntry:
    fields = {"specversion": "1.0", "id": f"id-{seq}", "subject": key, "data": data or f'{{"seq": {seq}}}'}
    return OutgoingEntry(stream, fields, order_key=key)


@pytest.mark.parametrize("partitioner", ["consistent_random", "murmur2_random", "outbox"])
def test_kafka_partitioner_places_a_key_in_one_partition(
    kafka_server: KafkaEndpoint,
    kafka_prefix: str,
    topic: str,
    publishers: list[KafkaPublisher],
    partitioner: str,
) -> None:
    """Every record of a key lands in one partition, in order; CRC-32 and the outbox layout agree for keys."""
    publisher = _publisher(publishers, f"{kafka_server.url}?partitioner={partitioner}", kafka_prefix)
    token = publisher.publish([]).incarnation
    keys = [f"order-{i}" for i in range(12)]
    entries = [_entry(f"{topic}:{zlib.crc32(k.encode()) % 4}", k, seq) for seq in range(3) for k in keys]
    result = publisher.publish(entries, incarnation=token)
    assert {o.outcome for o in result.outcomes} == {EntryStatus.PUBLISHED}
    placed: dict[str, set[int]] = {}
    for partition in range(4):
        for record in read_records(kafka_server.bootstrap, topic, partition):
            placed.setdefault(record.key().decode(), set()).add(partition)
    assert all(len(parts) == 1 for parts in placed.values()), placed
    layout = {k: zlib.crc32(k.encode()) % 4 for k in keys}
    if partitioner in ("consistent_random", "outbox"):
        assert {k: next(iter(p)) for k, p in placed.items()} == layout
    else:  # murmur2: the Java client's partitions, not the outbox layout's
        assert {k: next(iter(p)) for k, p in placed.items()} != layout


def test_kafka_entry_refused_by_the_broker_is_rejected_and_later_entries_of_its_key_skipped(
    kafka_server: KafkaEndpoint, kafka_prefix: str, topic: str, publishers: list[KafkaPublisher]
) -> None:
    """A record over the size limit is REJECTED with the reason; its key's next entry SKIPPED; others published."""
    publisher = _publisher(publishers, f"{kafka_server.url}?partitioner=outbox", kafka_prefix)
    token = publisher.publish([]).incarnation
    huge = '"' + "x" * 2_000_000 + '"'
    bad_name = OutgoingEntry(f"{kafka_prefix}bad name", {"id": "x", "data": "{}"}, order_key="c")
    entries = [
        _entry(f"{topic}:0", "a", 0, huge),
        _entry(f"{topic}:0", "a", 1),
        _entry(f"{topic}:1", "b", 2),
        bad_name,
    ]
    result = publisher.publish(entries, incarnation=token)
    outcomes = [o.outcome for o in result.outcomes]
    assert outcomes == [
        EntryStatus.REJECTED,
        EntryStatus.SKIPPED,
        EntryStatus.PUBLISHED,
        EntryStatus.REJECTED,
    ]
    assert "MSG_SIZE_TOO_LARGE" in (result.outcomes[0].error or "")
    assert "not a valid Kafka topic name" in (result.outcomes[3].error or "")
    assert [r.key() for r in read_records(kafka_server.bootstrap, topic, 1)] == [b"b"]
    assert read_records(kafka_server.bootstrap, topic, 0) == []


def test_kafka_fence_advanced_by_one_publisher_refuses_another(
    kafka_server: KafkaEndpoint, kafka_prefix: str, topic: str, publishers: list[KafkaPublisher]
) -> None:
    """Fences live in the broker (the fence topic), not in the publisher: a second relay's stale epoch is refused."""
    url = f"{kafka_server.url}?partitioner=outbox"
    new_owner, stale = _publisher(publishers, url, kafka_prefix), _publisher(publishers, url, kafka_prefix)
    token = new_owner.publish([]).incarnation
    assert stale.publish([]).incarnation == token  # one broker, one incarnation
    stale.publish([_entry(f"{topic}:0", "a", 0)], fences=[Fence("db:outbox:0", 4)], incarnation=token)
    new_owner.publish([], fences=[Fence("db:outbox:0", 5)], incarnation=token)
    with pytest.raises(FencedError, match="epoch 5"):
        stale.publish([_entry(f"{topic}:0", "a", 1)], fences=[Fence("db:outbox:0", 4)], incarnation=token)
    assert len(read_records(kafka_server.bootstrap, topic, 0)) == 1


def test_kafka_broker_that_lost_its_data_reports_a_new_incarnation(
    kafka_prefix: str, publishers: list[KafkaPublisher]
) -> None:
    """Tansu keeps everything in memory: after a restart the token differs and nothing is written for the old one."""
    with KafkaServer() as server:
        create_topic(server.bootstrap, f"{kafka_prefix}orders")
        publisher = _publisher(publishers, server.url, kafka_prefix)
        before = publisher.publish([]).incarnation
        server.restart()
        create_topic(server.bootstrap, f"{kafka_prefix}orders")
        result = _retried(
            lambda: publisher.publish([_entry(f"{kafka_prefix}orders", "a", 0)], incarnation=before)
        )
        assert result.incarnation not in (None, before)
        assert [o.outcome for o in result.outcomes] == [EntryStatus.SKIPPED]
        assert read_records(server.bootstrap, f"{kafka_prefix}orders") == []


def _retried(action: Callable[[], PublishResult]) -> PublishResult:
    """Retry through BrokerError as the relay does (the first batch after a broker restart may time out)."""
    for _ in range(3):
        try:
            return action()
        except BrokerError:
            continue
    return action()


def test_kafka_refused_sasl_credentials_are_an_auth_error_without_the_password(
    kafka_prefix: str, publishers: list[KafkaPublisher]
) -> None:
    """A broker requiring SASL refuses an unknown user: BrokerAuthError (never retried), password not in it."""
    with KafkaServer(authentication=True) as server:
        host = server.bootstrap
        publisher = KafkaPublisher(f"kafka://alice:S3NTINEL-pw@{host}", key_prefix=kafka_prefix, timeout=3)
        publishers.append(publisher)
        with pytest.raises(BrokerAuthError) as caught:
            publisher.publish([])
    assert "SASL" in str(caught.value)
    assert "S3NTINEL" not in str(caught.value)
