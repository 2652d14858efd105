"""Kafka benchmark: the relay and a consumer against raw confluent-kafka loops on the same broker, one run.

On a private Tansu broker (or the one given with --bootstrap), with SQLite
files for the databases:

1. raw produce: one idempotent ``acks=all`` producer writing N records (the
   relay's headers and payload), flushed every ``--batch`` records;
2. the relay (in-process ``Relay.run`` with ``once``) moving N outbox rows to
   Kafka, and its ratio to (1);
3. raw consume: one consumer reading the N records, committing every batch
   (the broker's limit, no database);
4. the consumer runner (``ConsumerRunner.run(once=True)``, a handler writing
   one row per message, inbox and stored offsets, one SQLite transaction per
   message) on the same records, and its ratio to (3).

Prints one JSON object. Usage::

    python benchmarks/kafka_bench.py --rows 5000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import structlog
from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy import create_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import inbox  # noqa: E402
import outbox  # noqa: E402
from brokers import StreamLayout, connect_subscriber  # noqa: E402
from relay import Relay, RelayConfig  # noqa: E402
from tests._inbox import domain, record_effect  # noqa: E402
from tests._kafka import KafkaServer, create_topic  # noqa: E402
from tests._relay_support import write_events  # noqa: E402


def raw_produce(bootstrap: str, topic: str, rows: int, batch: int) -> float:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 2}
    )
    headers = [("ce_specversion", b"1.0"), ("ce_type", b"orders"), ("ce_source", b"bench"),
               ("content-type", b"application/json"), ("ce_topic", b"orders"),
               ("ce_headers", b"{}")]  # fmt: skip
    started = time.perf_counter()
    for first in range(0, rows, batch):
        for i in range(first, min(first + batch, rows)):
            value = json.dumps({"seq": i, "pad": "x" * 220}).encode()
            producer.produce(topic, value=value, key=f"k{i % 5}".encode(),
                             headers=[*headers, ("ce_id", str(uuid.uuid4()).encode())])  # fmt: skip
        producer.flush(30)
    return rows / (time.perf_counter() - started)


def relay(db: str, url: str, prefix: str, rows: int, batch: int) -> float:
    config = RelayConfig(database_url=db, broker_url=url, layout=StreamLayout(prefix=prefix),
                         batch_size=batch, once=True, replay_window=dt.timedelta(0))  # fmt: skip
    daemon = Relay(config)
    started = time.perf_counter()
    daemon.run()
    return rows / (time.perf_counter() - started)


def raw_consume(bootstrap: str, topic: str, rows: int, batch: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})  # fmt: skip
    consumer.assign([TopicPartition(topic, 0, 0)])
    done = 0
    started = time.perf_counter()
    while done < rows:
        messages = [m for m in consumer.consume(num_messages=batch, timeout=1) if m.error() is None]
        if messages:
            consumer.commit(message=messages[-1], asynchronous=False)
            done += len(messages)
    elapsed = time.perf_counter() - started
    consumer.close()
    return rows / elapsed


def runner(db: str, url: str, prefix: str, rows: int, batch: int) -> float:
    registry = inbox.Registry()
    registry.add("orders", record_effect)
    layout = StreamLayout(prefix=prefix)
    config = inbox.ConsumerConfig(group=f"bench-{uuid.uuid4().hex[:6]}", consumer_name="runner",
                                  batch_size=batch, layout=layout, retention=None)  # fmt: skip
    consumer = inbox.ConsumerRunner(registry, db=db, subscriber=connect_subscriber(url), config=config)

    async def go() -> float:
        started = time.perf_counter()
        await consumer.run(once=True)
        elapsed = time.perf_counter() - started
        await consumer.aclose()
        return rows / elapsed

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--bootstrap", help="host:port of a broker to use instead of a private Tansu")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    directory = Path(tempfile.mkdtemp(prefix="outboxkit-kafka-bench-"))
    db = f"sqlite:///{directory / 'app.db'}"
    outbox.upgrade(db)
    engine = create_engine(db)
    domain.create_all(engine)
    engine.dispose()
    server = None if args.bootstrap else KafkaServer()
    if server is not None:
        server.start()
    bootstrap = args.bootstrap or (server.bootstrap if server else "")
    try:
        prefix = f"b{uuid.uuid4().hex[:6]}."
        for name in ("raw", "orders"):
            create_topic(bootstrap, prefix + name)
        results: dict[str, object] = {"rows": args.rows, "batch": args.batch,
                                      "broker": "tansu" if server else "external",
                                      "python": platform.python_version()}  # fmt: skip
        results["raw_produce_per_s"] = round(raw_produce(bootstrap, prefix + "raw", args.rows, args.batch))
        write_events(db, args.rows, keys=5, per_tx=1000)
        results["relay_per_s"] = round(relay(db, f"kafka://{bootstrap}", prefix, args.rows, args.batch))
        ratio = results["relay_per_s"] / results["raw_produce_per_s"]  # type: ignore[operator]
        results["relay_vs_raw"] = round(ratio, 3)
        results["raw_consume_per_s"] = round(raw_consume(bootstrap, prefix + "orders", args.rows, args.batch))
        results["runner_per_s"] = round(runner(db, f"kafka://{bootstrap}", prefix, args.rows, args.batch))
        ratio = results["runner_per_s"] / results["raw_consume_per_s"]  # type: ignore[operator]
        results["runner_vs_raw"] = round(ratio, 3)
    finally:
        if server is not None:
            server.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
