"""Consumer benchmark: raw loops against the runner's two modes, in one run, on one machine.

    python benchmarks/consumer_bench.py [--messages 5000] [--batch-messages 20000]

Starts its own PostgreSQL and Redis (tests/_servers.py) unless
OUTBOXKIT_TEST_DATABASE_URL / OUTBOXKIT_TEST_REDIS_URL point at servers.
Every variant consumes the same kind of stream entries (the documented wire
format) and applies the same effect per message: one inbox row plus one
``UPDATE account SET balance = balance + 1``. It prints one JSON document with
messages per second and the ratios runner/raw.

- raw_per_message: XREADGROUP (COUNT 100); per entry: BEGIN, INSERT inbox ON
  CONFLICT DO NOTHING, UPDATE, COMMIT, XACK. psycopg and redis-py, nothing else.
- raw_per_message_sqlalchemy: the same loop through SQLAlchemy Core, the stack
  the runner is built on (isolates the driver-stack cost from the runner's).
- raw_batched: XREADGROUP (COUNT 100); one transaction per read: one multi-row
  inbox INSERT, one UPDATE per message, COMMIT, one XACK; and the same through
  SQLAlchemy Core (raw_batched_sqlalchemy).
- runner_message / runner_batch: ``inbox.ConsumerRunner`` in ``message`` and
  ``batch`` mode with a sync handler doing the UPDATE through its Session.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import pathlib
import sys
import time
import uuid
from collections.abc import Iterator

import psycopg
import redis
import structlog
from sqlalchemy import Column, Integer, MetaData, Table, bindparam, create_engine, update
from sqlalchemy.orm import Session

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import inbox  # noqa: E402
import outbox  # noqa: E402
from brokers import StreamLayout, connect_subscriber  # noqa: E402
from outbox import Envelope  # noqa: E402

ACCOUNTS = 100
READ_COUNT = 100
bench = MetaData()
account = Table("bench_account", bench, Column("id", Integer, primary_key=True), Column("balance", Integer))
# Built once, as a handler on a hot path would: the same SQL as the raw loops.
DEPOSIT = update(account).where(account.c.id == bindparam("account")).values(balance=account.c.balance + 1)


@contextlib.contextmanager
def servers(*, fsync: bool = True) -> Iterator[tuple[str, str]]:
    pg, rd = os.environ.get("OUTBOXKIT_TEST_DATABASE_URL"), os.environ.get("OUTBOXKIT_TEST_REDIS_URL")
    with contextlib.ExitStack() as stack:
        if pg is None or rd is None:
            from tests._servers import PostgresServer, RedisServer  # noqa: PLC0415

            if pg is None:
                # fsync and synchronous_commit on: a commit waits for the disk, as in production.
                settings = {"fsync": "on" if fsync else "off"}
                server = stack.enter_context(PostgresServer(durable=True, settings=settings))
                name = f"bench_{uuid.uuid4().hex[:8]}"
                pg = server.create_database(name)
            if rd is None:
                rd = stack.enter_context(RedisServer()).url
        yield pg, rd


def prepare_db(url: str) -> None:
    outbox.upgrade(url)
    engine = create_engine(url)
    bench.drop_all(engine)
    bench.create_all(engine)
    with engine.begin() as conn:
        conn.execute(account.insert(), [{"id": i, "balance": 0} for i in range(ACCOUNTS)])
        conn.execute(inbox.inbox.delete())
    engine.dispose()


def fill(client: redis.Redis, stream: str, count: int) -> None:
    client.delete(stream)
    now = dt.datetime.now(dt.UTC)
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        key = str(n % ACCOUNTS)
        pipe.xadd(
            stream,
            outbox.encode_entry(
                message_id=uuid.uuid4(),
                topic="bench.deposit",
                type="bench.deposit",
                source="bench",
                key=key,
                time=now,
                headers_json="{}",
                data_json=json.dumps({"account": n % ACCOUNTS}),
            ),
        )
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()
    client.xgroup_create(stream, "bench", id="0")


def _psycopg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


INSERT_INBOX = (
    "INSERT INTO outboxkit_inbox (consumer, message_id, topic, processed_at, attempts)"
    " VALUES (%s, %s, %s, now(), 1) ON CONFLICT DO NOTHING"
)
UPDATE = "UPDATE bench_account SET balance = balance + 1 WHERE id = %s"


def raw_per_message(db: str, client: redis.Redis, stream: str, total: int) -> float:
    started = time.perf_counter()
    done = 0
    with psycopg.connect(_psycopg_dsn(db)) as conn:
        while done < total:
            reply = client.xreadgroup("bench", "raw", {stream: ">"}, count=READ_COUNT, block=1000)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    message = outbox.decode_entry(fields)
                    with conn.transaction():
                        cur = conn.execute(INSERT_INBOX, ("bench", str(message.id), message.topic))
                        if cur.rowcount:
                            conn.execute(UPDATE, (int(message.payload["account"]),))  # type: ignore[index,call-overload]
                    client.xack(stream, "bench", entry_id)
                    done += 1
    return total / (time.perf_counter() - started)


def raw_per_message_sqlalchemy(db: str, client: redis.Redis, stream: str, total: int) -> float:
    """The per-message raw loop through SQLAlchemy Core: the driver stack the runner is built on."""
    engine = create_engine(db)
    started = time.perf_counter()
    done = 0
    while done < total:
        reply = client.xreadgroup("bench", "raw", {stream: ">"}, count=READ_COUNT, block=1000)
        for _, entries in reply or []:
            for entry_id, fields in entries:
                message = outbox.decode_entry(fields)
                with engine.begin() as conn:
                    if inbox.record_message(conn, "bench", message.id, topic=message.topic):
                        conn.execute(DEPOSIT, {"account": message.payload["account"]})  # type: ignore[index,call-overload]
                client.xack(stream, "bench", entry_id)
                done += 1
    rate = total / (time.perf_counter() - started)
    engine.dispose()
    return rate


def raw_batched(db: str, client: redis.Redis, stream: str, total: int) -> float:
    started = time.perf_counter()
    done = 0
    with psycopg.connect(_psycopg_dsn(db)) as conn:
        while done < total:
            reply = client.xreadgroup("bench", "raw", {stream: ">"}, count=READ_COUNT, block=1000)
            for _, entries in reply or []:
                messages = [outbox.decode_entry(fields) for _, fields in entries]
                with conn.transaction(), conn.cursor() as cur:
                    values = ",".join(["(%s, %s, %s, now(), 1)"] * len(messages))
                    params = [p for m in messages for p in ("bench", str(m.id), m.topic)]
                    cur.execute(
                        "INSERT INTO outboxkit_inbox (consumer, message_id, topic, processed_at, attempts)"
                        f" VALUES {values} ON CONFLICT DO NOTHING RETURNING message_id",
                        params,
                    )
                    fresh = {row[0] for row in cur.fetchall()}
                    # One statement per message, as one handler per message issues it
                    # (an executemany would be a different, pipelined workload).
                    for m in messages:
                        if str(m.id) in fresh:
                            cur.execute(UPDATE, (int(m.payload["account"]),))  # type: ignore[index,call-overload]
                client.xack(stream, "bench", *[entry_id for entry_id, _ in entries])
                done += len(entries)
    return total / (time.perf_counter() - started)


def raw_batched_sqlalchemy(db: str, client: redis.Redis, stream: str, total: int) -> float:
    """The batched raw loop through SQLAlchemy Core (one multi-row insert, one UPDATE per message)."""
    engine = create_engine(db)
    started = time.perf_counter()
    done = 0
    while done < total:
        reply = client.xreadgroup("bench", "raw", {stream: ">"}, count=READ_COUNT, block=1000)
        for _, entries in reply or []:
            messages = [outbox.decode_entry(fields) for _, fields in entries]
            with engine.begin() as conn:
                fresh = inbox.record_messages(conn, "bench", [(m.id, m.topic) for m in messages])
                for m in messages:
                    if str(m.id) in fresh:
                        conn.execute(DEPOSIT, {"account": m.payload["account"]})  # type: ignore[index,call-overload]
            client.xack(stream, "bench", *[entry_id for entry_id, _ in entries])
            done += len(entries)
    rate = total / (time.perf_counter() - started)
    engine.dispose()
    return rate


def deposit(message: Envelope, session: Session) -> None:
    """The benchmark's trivial handler: one UPDATE."""
    session.execute(DEPOSIT, {"account": message.payload["account"]})  # type: ignore[index,call-overload]


def runner(db: str, redis_url: str, stream: str, total: int, mode: inbox.Mode) -> float:
    registry = inbox.Registry()
    registry.add("bench.deposit", deposit)
    config = inbox.ConsumerConfig(
        group="bench",
        consumer_name="runner",
        mode=mode,
        batch_size=READ_COUNT,
        layout=StreamLayout(prefix=stream.removesuffix("bench.deposit")),
        retention=None,
    )
    consumer = inbox.ConsumerRunner(registry, db=db, subscriber=connect_subscriber(redis_url), config=config)

    async def go() -> float:
        started = time.perf_counter()
        await consumer.run(once=True)
        elapsed = time.perf_counter() - started
        await consumer.aclose()
        return total / elapsed

    return asyncio.run(go())


def check(db: str, expected: int) -> None:
    engine = create_engine(db)
    with engine.connect() as conn:
        total = conn.execute(account.select().with_only_columns(account.c.balance)).scalars().all()
    engine.dispose()
    assert sum(total) == expected, (sum(total), expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages for the per-message variants")
    parser.add_argument("--batch-messages", type=int, default=20000, help="messages for the batched variants")
    parser.add_argument(
        "--no-fsync", action="store_true", help="PostgreSQL without fsync: CPU-bound, shows library overhead"
    )
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    results: dict[str, float] = {}
    with servers(fsync=not args.no_fsync) as (db, redis_url):
        client = redis.Redis.from_url(redis_url)
        variants = [
            ("raw_per_message", args.messages, lambda s, n: raw_per_message(db, client, s, n)),
            (
                "raw_per_message_sqlalchemy",
                args.messages,
                lambda s, n: raw_per_message_sqlalchemy(db, client, s, n),
            ),
            ("runner_message", args.messages, lambda s, n: runner(db, redis_url, s, n, inbox.Mode.MESSAGE)),
            ("raw_batched", args.batch_messages, lambda s, n: raw_batched(db, client, s, n)),
            (
                "raw_batched_sqlalchemy",
                args.batch_messages,
                lambda s, n: raw_batched_sqlalchemy(db, client, s, n),
            ),
            ("runner_batch", args.batch_messages, lambda s, n: runner(db, redis_url, s, n, inbox.Mode.BATCH)),
        ]
        for name, count, run in variants:
            prepare_db(db)
            stream = f"bench{uuid.uuid4().hex[:6]}:bench.deposit"
            fill(client, stream, count)
            results[name] = round(run(stream, count), 1)
            check(db, count)
        client.close()
    report = {
        "messages_per_second": results,
        "ratios": {
            "runner_message/raw_per_message": round(
                results["runner_message"] / results["raw_per_message"], 3
            ),
            "runner_batch/raw_batched": round(results["runner_batch"] / results["raw_batched"], 3),
            "runner_message/raw_per_message_sqlalchemy": round(
                results["runner_message"] / results["raw_per_message_sqlalchemy"], 3
            ),
            "runner_batch/raw_batched_sqlalchemy": round(
                results["runner_batch"] / results["raw_batched_sqlalchemy"], 3
            ),
        },
        "targets": {"runner_message/raw_per_message": 0.9, "runner_batch/raw_batched": 0.7},
        "settings": {
            "read_count": READ_COUNT,
            "accounts": ACCOUNTS,
            "cpus": os.cpu_count(),
            "fsync": not args.no_fsync,
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
