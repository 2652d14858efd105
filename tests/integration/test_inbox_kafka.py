"""The consumer runner on Kafka (Tansu), in process: dead letters for foreign records, offsets, two runners."""

from __future__ import annotations

import asyncio

from confluent_kafka import Producer
from sqlalchemy import create_engine, select

import inbox
from brokers import StreamLayout, connect_subscriber
from inbox.tables import consumer_offset
from tests._inbox import count_effects, domain, effect, entry, fast_config, record_effect
from tests._kafka import KafkaEndpoint, committed_offset, create_topic, produce_fields


def _runner(db: str, url: str, prefix: str, **overrides: object) -> inbox.ConsumerRunner:
    registry = inbox.Registry()
    registry.add("orders.created", record_effect)
    # A group of its own (the prefix): tests share the session's broker, and a
    # group's rebalance waits for every member it knows.
    layout = StreamLayout(prefix=prefix, default_partitions=2)
    config = fast_config(f"{prefix}billing", layout=layout, **overrides)
    return inbox.ConsumerRunner(registry, db=db, subscriber=connect_subscriber(url), config=config)


def _prepare(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    domain.create_all(engine)
    engine.dispose()


async def test_kafka_runner_dead_letters_a_foreign_record_and_stores_offsets(
    sqlite_url: str, kafka_server: KafkaEndpoint, kafka_prefix: str
) -> None:
    """A record without CloudEvents headers is dead-lettered with the reason; the rest handled; offsets stored."""
    _prepare(sqlite_url)
    bootstrap, topic = kafka_server.bootstrap, f"{kafka_prefix}orders.created"
    create_topic(bootstrap, topic, partitions=2)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value=b"not json", key=b"k", partition=0)
    producer.flush(10)
    for n in range(6):
        produce_fields(bootstrap, f"{topic}:{n % 2}", entry(payload={"n": n}, key=f"k{n}"), partitions=2)
    runner = _runner(sqlite_url, kafka_server.url, kafka_prefix)
    await asyncio.wait_for(runner.run(once=True), timeout=60)
    await runner.aclose()
    assert count_effects(sqlite_url) == 6
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        positions = dict(conn.execute(select(consumer_offset.c.stream, consumer_offset.c.next_offset)).all())
    letters = inbox.select_dead_letters(engine)
    engine.dispose()
    assert positions == {f"{topic}:0": 4, f"{topic}:1": 3}
    assert [(d.stream, d.entry_id, d.message_id) for d in letters] == [(f"{topic}:0", "0", None)]
    assert "undecodable entry: missing field 'specversion'" in letters[0].error
    assert committed_offset(bootstrap, f"{kafka_prefix}billing", f"{topic}:0") == 4


async def test_kafka_two_runners_share_the_partitions_and_apply_each_message_once_in_key_order(
    sqlite_url: str, kafka_server: KafkaEndpoint, kafka_prefix: str
) -> None:
    """Two members of one group split the partitions (coordinator's assignment); each key's messages in order."""
    _prepare(sqlite_url)
    bootstrap, topic = kafka_server.bootstrap, f"{kafka_prefix}orders.created"
    create_topic(bootstrap, topic, partitions=2)
    for n in range(40):
        key = f"k{n % 4}"
        produce_fields(bootstrap, f"{topic}:{n % 4 % 2}", entry(payload={"n": n}, key=key), partitions=2)
    runners = [_runner(sqlite_url, kafka_server.url, kafka_prefix, consumer_name=f"c{i}") for i in range(2)]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        for _ in range(600):
            if count_effects(sqlite_url) >= 40:
                break
            await asyncio.sleep(0.1)
    finally:
        for r in runners:
            r.stop()
        await asyncio.gather(*tasks)
        for r in runners:
            await r.aclose()
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        rows = conn.execute(select(effect.c.key, effect.c.n).order_by(effect.c.id)).all()
    engine.dispose()
    assert sorted(n for _, n in rows) == list(range(40))  # each once
    for key in {k for k, _ in rows}:
        ns = [n for k, n in rows if k == key]
        assert ns == sorted(ns), (key, ns)
