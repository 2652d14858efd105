"""NATS JetStream benchmark: the relay and the consumer against raw nats-py loops, in one run.

Starts a private PostgreSQL (fsync on) and a 3-node JetStream cluster on
loopback (R3 file streams, tests/_nats.py), then measures:

1. relay: a raw loop (claim 500 rows in id order, publish them with nats-py,
   ``DELETE``, commit) in three forms: *ordered* (each publish waits for its
   PubAck), *pipelined* (all publishes of a batch in flight at once: no order
   guarantee when one fails) and *atomic* (one JetStream atomic batch, what
   the relay does); then ``Relay.run(once)`` on the same backlog, one stream,
   and on a topic with 8 partitions;
2. consumer: a raw loop (pull 100, per message an inbox ``INSERT`` + ``UPDATE``
   + ``COMMIT``, ack) against ``ConsumerRunner`` in message and batch mode.

Prints one JSON object. Usage::

    python benchmarks/nats_bench.py --rows 20000 --messages 5000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import platform
import sys
import time
import uuid
from pathlib import Path

import psycopg
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import consumer_bench  # noqa: E402
import nats  # noqa: E402
import relay_bench  # noqa: E402

import inbox  # noqa: E402
import outbox  # noqa: E402
from brokers import OutgoingEntry, StreamLayout, connect_publisher  # noqa: E402
from brokers.nats_jetstream._names import stream_name, subject_of  # noqa: E402
from relay import Relay, RelayConfig  # noqa: E402
from tests._nats import ADMIN, NatsCluster  # noqa: E402
from tests._servers import PostgresServer  # noqa: E402

BATCH = 500


def _servers(url: str) -> list[str]:
    return [f"nats://{h}" for h in url.split("@", 1)[1].split(",")]


async def _raw_relay(db: str, url: str, stream: str, *, mode: str) -> float:
    nc = await nats.connect(_servers(url), user=ADMIN[0], password=ADMIN[1])
    js = nc.jetstream(timeout=10)
    with contextlib.suppress(nats.js.errors.BadRequestError):
        await js.add_stream(
            name=stream_name(stream), subjects=[subject_of(stream)], num_replicas=3, allow_atomic=True
        )
    subject = subject_of(stream)
    moved = 0
    started = time.perf_counter()
    with psycopg.connect(relay_bench._dsn(db)) as conn:  # noqa: SLF001 - the benchmarks share helpers
        while True:
            rows = conn.execute(
                "SELECT id, message_id, type, source, key, created_at, topic, headers::text, payload::text"
                " FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT %s",
                (BATCH,),
            ).fetchall()
            if not rows:
                conn.commit()
                break
            sends = []
            batch_id = uuid.uuid4().hex
            for number, r in enumerate(rows, start=1):
                # The same headers the relay sends (docs/wire-format.md).
                headers = {"specversion": "1.0", "id": str(r[1]), "type": r[2], "source": r[3],
                           "time": r[5].isoformat(), "datacontenttype": "application/json",
                           "topic": r[6], "headers": r[7], "subject": r[4],
                           "Nats-Msg-Id": str(r[1])}  # fmt: skip
                if mode == "atomic":  # one all-or-nothing batch: only the commit is answered
                    headers |= {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
                    if number < len(rows):
                        await nc.publish(subject, r[8].encode(), headers=headers)
                        continue
                    headers["Nats-Batch-Commit"] = "1"
                    reply = await nc.request(subject, r[8].encode(), headers=headers, timeout=10)
                    if b"error" in reply.data:
                        raise RuntimeError(reply.data.decode())
                    continue
                send = js.publish(subject, r[8].encode(), headers=headers)
                if mode == "ordered":
                    await send
                else:
                    sends.append(send)
            await asyncio.gather(*sends)
            conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", ([r[0] for r in rows],))
            conn.commit()
            moved += len(rows)
    await nc.close()
    return moved / (time.perf_counter() - started)


def _relay(db: str, url: str, prefix: str, partitions: int) -> float:
    rows = relay_bench.pending(db)
    layout = StreamLayout(prefix=prefix, partitions={"orders": partitions})
    config = RelayConfig(
        database_url=db, broker_url=url, layout=layout, batch_size=BATCH, once=True,
        replay_window=dt.timedelta(0),
    )  # fmt: skip
    started = time.perf_counter()
    Relay(config).run()
    return rows / (time.perf_counter() - started)


def relay_part(db: str, url: str, rows: int) -> dict[str, float]:
    results: dict[str, float] = {}
    for name, run in (
        ("raw_ordered", lambda p: asyncio.run(_raw_relay(db, url, f"{p}orders", mode="ordered"))),
        ("raw_pipelined", lambda p: asyncio.run(_raw_relay(db, url, f"{p}orders", mode="pipelined"))),
        ("raw_atomic", lambda p: asyncio.run(_raw_relay(db, url, f"{p}orders", mode="atomic"))),
        ("relay_1_stream", lambda p: _relay(db, url, p, 1)),
        ("relay_8_partitions", lambda p: _relay(db, url, p, 8)),
    ):
        relay_bench.fill(db, rows)
        results[name] = round(run(f"b{uuid.uuid4().hex[:6]}:"))
        if relay_bench.pending(db):
            msg = f"{name} left rows behind"
            raise RuntimeError(msg)
    return results


def _fill_stream(url: str, stream: str, count: int) -> None:
    publisher = connect_publisher(url)
    token = publisher.publish([]).incarnation
    now = dt.datetime.now(dt.UTC)
    for first in range(0, count, BATCH):
        entries = [
            OutgoingEntry(
                stream,
                outbox.encode_entry(
                    message_id=uuid.uuid4(),
                    topic="bench.deposit",
                    type="bench.deposit",
                    source="bench",
                    key=str(n % consumer_bench.ACCOUNTS),
                    time=now,
                    headers_json="{}",
                    data_json=json.dumps({"account": n % consumer_bench.ACCOUNTS}),
                ),
                order_key=str(n % consumer_bench.ACCOUNTS),
            )
            for n in range(first, min(first + BATCH, count))
        ]
        publisher.publish(entries, incarnation=token)
    publisher.close()


async def _raw_consumer(db: str, url: str, stream: str, total: int) -> float:
    nc = await nats.connect(_servers(url), user=ADMIN[0], password=ADMIN[1])
    js = nc.jetstream(timeout=10)
    sub = await js.pull_subscribe(subject_of(stream), durable="raw", stream=stream_name(stream))
    done = 0
    started = time.perf_counter()
    with psycopg.connect(consumer_bench._psycopg_dsn(db)) as conn:  # noqa: SLF001
        while done < total:
            for msg in await sub.fetch(consumer_bench.READ_COUNT, timeout=5):
                fields = {**(msg.headers or {}), "data": msg.data.decode()}
                message = outbox.decode_entry(fields)
                with conn.transaction():
                    cur = conn.execute(consumer_bench.INSERT_INBOX, ("raw", str(message.id), message.topic))
                    if cur.rowcount:
                        conn.execute(consumer_bench.UPDATE, (int(message.payload["account"]),))  # type: ignore[index,call-overload]
                await msg.ack_sync()
                done += 1
    await nc.close()
    return total / (time.perf_counter() - started)


def consumer_part(db: str, url: str, messages: int) -> dict[str, float]:
    results: dict[str, float] = {}
    for name, run in (
        ("raw_per_message", lambda s: asyncio.run(_raw_consumer(db, url, s, messages))),
        ("runner_message", lambda s: consumer_bench.runner(db, url, s, messages, inbox.Mode.MESSAGE)),
        ("runner_batch", lambda s: consumer_bench.runner(db, url, s, messages, inbox.Mode.BATCH)),
    ):
        consumer_bench.prepare_db(db)
        stream = f"c{uuid.uuid4().hex[:6]}:bench.deposit"
        _fill_stream(url, stream, messages)
        results[name] = round(run(stream))
        consumer_bench.check(db, messages)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000, help="outbox rows per relay variant")
    parser.add_argument("--messages", type=int, default=5000, help="stream entries per consumer variant")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with PostgresServer(durable=True) as pg, NatsCluster() as cluster:
        db = pg.create_database(f"bench_{uuid.uuid4().hex[:8]}")
        outbox.upgrade(db)
        report = {
            "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
            "relay_rows_per_s": relay_part(db, cluster.url(), args.rows),
            "consumer_messages_per_s": consumer_part(db, cluster.url(), args.messages),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
