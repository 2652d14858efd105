from __future__ import annotations

import asyncio
import datetime as dt
import json
import pathlib
import threading
import time

import pytest
import uuid_utils.compat as uuid_utils
from prometheus_client import REGISTRY
from sqlalchemy import Engine, create_engine, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

import inbox
import outbox
from brokers import StreamLayout
from brokers.memory import MemoryStreams, MemorySubscriber
from outbox import ConfigError, Envelope, key_hash
from tests._inbox import domain, effect, entry, fast_config, memory_engine, record_effect


def _count(engine: Engine, table: object = effect) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)  # type: ignore[arg-type]


def _runner(
    registry: inbox.Registry, engine: Engine, streams: MemoryStreams, **overrides: object
) -> inbox.ConsumerRunner:
    return inbox.ConsumerRunner(
        registry, db=engine, subscriber=MemorySubscriber(streams), config=fast_config("billing", **overrides)
    )


def _registry(handler: object = record_effect, topic: str = "orders.created") -> inbox.Registry:
    registry = inbox.Registry()
    registry.add(topic, handler)  # type: ignore[arg-type]
    return registry


async def test_runner_keeps_per_key_order_across_partitions() -> None:
    """Messages of one key are handled in publish order, with four partitions handled concurrently."""
    engine, streams = memory_engine(), MemoryStreams()
    layout = StreamLayout(default_partitions=4)
    seen: dict[str, list[int]] = {}

    def handler(message: Envelope, session: Session) -> None:
        assert isinstance(message.payload, dict)
        seen.setdefault(str(message.key), []).append(int(message.payload["n"]))  # type: ignore[arg-type]

    for n in range(200):
        key = f"k{n % 7}"
        mid = uuid_utils.uuid7()
        streams.add(
            layout.stream_for("orders.created", key_hash(key, mid)),
            entry(payload={"n": n}, key=key, message_id=mid),
        )
    await _runner(_registry(handler), engine, streams, layout=layout, batch_size=10).run(once=True)
    assert sum(len(v) for v in seen.values()) == 200
    assert all(v == sorted(v) for v in seen.values())
    assert all(not streams.pending(s, "billing") for s in layout.streams_of("orders.created"))


async def test_runner_applies_repeated_message_once() -> None:
    """The same message delivered five times has one effect; every delivery is acknowledged."""
    engine, streams = memory_engine(), MemoryStreams()
    mid = uuid_utils.uuid7()
    for _ in range(5):
        streams.add("orders.created", entry(message_id=mid, payload={"n": 1}))
    with capture_logs() as logs:
        await _runner(_registry(), engine, streams).run(once=True)
    assert _count(engine) == 1
    assert streams.pending("orders.created", "billing") == {}
    events = [e["event"] for e in logs]
    assert events.count("inbox.message_handled") == 1
    assert events.count("inbox.duplicate_skipped") == 4


async def test_runner_dead_letters_failing_message_and_goes_on() -> None:
    """A handler that keeps raising is retried to the limit, then dead-lettered; the rest commit."""
    engine, streams = memory_engine(), MemoryStreams()
    attempts: list[int] = []

    def handler(message: Envelope, session: Session) -> None:
        if message.payload == {"n": 2}:
            attempts.append(1)
            raise ValueError("card declined")
        record_effect(message, session)

    for n in range(5):
        streams.add("orders.created", entry(payload={"n": n}))
    with capture_logs() as logs:
        await _runner(_registry(handler), engine, streams, max_deliveries=3).run(once=True)
    assert len(attempts) == 3
    assert _count(engine) == 4
    letters = inbox.select_dead_letters(engine)
    assert [(d.error, d.deliveries, d.consumer) for d in letters] == [
        ("ValueError: card declined", 3, "billing")
    ]
    assert streams.pending("orders.created", "billing") == {}
    failed = [e for e in logs if e["event"] == "inbox.handler_failed"]
    assert [e["will_retry"] for e in failed] == [True, True, False]
    assert [e["event"] for e in logs].count("inbox.dead_lettered") == 1


async def test_runner_dead_letters_malformed_entries_with_reason() -> None:
    """Missing fields, bad JSON and bad UTF-8 are dead-lettered at once, each with its reason."""
    engine, streams = memory_engine(), MemoryStreams()
    good = entry(payload={"n": 1})
    missing = {k: v for k, v in entry().items() if k != "id"}
    bad_json = {**entry(), "data": "{not json"}
    bad_utf8: dict[bytes | str, bytes | str] = {k.encode(): v.encode() for k, v in entry().items()}
    bad_utf8[b"type"] = b"\xff\xfe"
    for fields in (missing, bad_json, bad_utf8, good):
        streams.add("orders.created", fields)
    await _runner(_registry(), engine, streams).run(once=True)
    assert _count(engine) == 1
    errors = [d.error for d in inbox.select_dead_letters(engine)]
    assert errors[0] == "undecodable entry: missing field 'id'"
    assert errors[1].startswith("undecodable entry: field 'data' is not valid JSON")
    assert errors[2] == "undecodable entry: field 'type' is not valid UTF-8"
    assert inbox.select_dead_letters(engine)[2].fields["type"] == "\\xff\\xfe"
    assert streams.pending("orders.created", "billing") == {}


async def test_runner_reject_dead_letters_without_retry() -> None:
    """A handler raising Reject is dead-lettered on the first delivery."""
    engine, streams = memory_engine(), MemoryStreams()

    def handler(message: Envelope, session: Session) -> None:
        raise inbox.Reject("unknown account")

    streams.add("orders.created", entry())
    await _runner(_registry(handler), engine, streams).run(once=True)
    assert [(d.error, d.deliveries) for d in inbox.select_dead_letters(engine)] == [
        ("rejected: unknown account", 1)
    ]


async def test_runner_batch_mode_isolates_a_failing_message() -> None:
    """In batch mode a failure redoes the batch one by one: the others commit once, one is dead-lettered."""
    engine, streams = memory_engine(), MemoryStreams()
    calls: list[int] = []

    def handler(message: Envelope, session: Session) -> None:
        assert isinstance(message.payload, dict)
        calls.append(int(message.payload["n"]))  # type: ignore[arg-type]
        if message.payload["n"] == 3:
            raise RuntimeError("boom")
        record_effect(message, session)

    for n in range(6):
        streams.add("orders.created", entry(payload={"n": n}))
    with capture_logs() as logs:
        await _runner(_registry(handler), engine, streams, mode=inbox.Mode.BATCH, max_deliveries=2).run(
            once=True
        )
    with engine.connect() as conn:
        ns = sorted(r[0] for r in conn.execute(select(effect.c.n)))
    assert ns == [0, 1, 2, 4, 5]
    assert len(inbox.select_dead_letters(engine)) == 1
    assert "inbox.batch_failed" in [e["event"] for e in logs]
    assert streams.pending("orders.created", "billing") == {}


async def test_runner_batch_mode_commits_batch_once() -> None:
    """In batch mode duplicates inside a batch are skipped by the multi-row insert."""
    engine, streams = memory_engine(), MemoryStreams()
    mid = uuid_utils.uuid7()
    for n in range(10):
        streams.add("orders.created", entry(payload={"n": n}))
        streams.add("orders.created", entry(payload={"n": 99}, message_id=mid))
    await _runner(_registry(), engine, streams, mode=inbox.Mode.BATCH, batch_size=7).run(once=True)
    assert _count(engine) == 11


async def test_runner_runs_async_handlers_with_async_session(tmp_path: pathlib.Path) -> None:
    """An ``async def`` handler gets an AsyncSession and its effects commit once."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    outbox.upgrade(url)
    engine = create_engine(url)
    domain.create_all(engine)
    streams = MemoryStreams()

    async def handler(message: Envelope, session: AsyncSession) -> None:
        await session.execute(insert(effect).values(message_id=str(message.id), n=1))

    mid = uuid_utils.uuid7()
    for _ in range(3):
        streams.add("orders.created", entry(message_id=mid))
    runner = inbox.ConsumerRunner(
        _registry(handler), db=url, subscriber=MemorySubscriber(streams), config=fast_config("billing")
    )
    await runner.run(once=True)
    await runner.aclose()
    assert _count(engine) == 1


async def test_runner_claims_entries_left_by_a_dead_consumer_first() -> None:
    """Entries pending for a consumer that died are claimed and handled before new ones."""
    engine, streams = memory_engine(), MemoryStreams()
    order: list[int] = []

    def handler(message: Envelope, session: Session) -> None:
        assert isinstance(message.payload, dict)
        order.append(int(message.payload["n"]))  # type: ignore[arg-type]

    sub = MemorySubscriber(streams)
    for n in range(3):
        streams.add("orders.created", entry(payload={"n": n}))
    await sub.ensure_group("orders.created", "billing")
    await sub.read("orders.created", "billing", "dead-one", count=2, block=dt.timedelta(0))
    streams.add("orders.created", entry(payload={"n": 3}))
    await _runner(_registry(handler), engine, streams).run(once=True)
    assert order == [0, 1, 2, 3]
    assert streams.pending("orders.created", "billing") == {}


async def test_runner_refuses_retention_shorter_than_redelivery_horizon() -> None:
    """A retention window shorter than claim idle x max deliveries refuses to start."""
    engine, streams = memory_engine(), MemoryStreams()
    runner = _runner(
        _registry(),
        engine,
        streams,
        retention=dt.timedelta(seconds=10),
        claim_idle=dt.timedelta(seconds=5),
        max_deliveries=5,
    )
    with pytest.raises(ConfigError, match="redelivery horizon"):
        await runner.run(once=True)


async def test_runner_stops_on_request_and_releases_leases() -> None:
    """stop() ends run() promptly and frees the partition leases for the next process."""
    engine, streams = memory_engine(), MemoryStreams()
    runner = _runner(_registry(), engine, streams)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.2)
    assert streams.leases
    runner.stop()
    await asyncio.wait_for(task, 5)
    assert not [k for k in streams.leases if not k[1].startswith("member:")]


async def test_runner_shares_partitions_between_processes() -> None:
    """Two runners in one group split the partitions and never hold the same one."""
    engine, streams = memory_engine(), MemoryStreams()
    layout = StreamLayout(default_partitions=4)
    a = _runner(
        _registry(), engine, streams, layout=layout, consumer_name="a", lease_ttl=dt.timedelta(seconds=0.3)
    )
    b = _runner(
        _registry(), engine, streams, layout=layout, consumer_name="b", lease_ttl=dt.timedelta(seconds=0.3)
    )
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    await asyncio.sleep(1.5)
    owners = [owner for (g, n), (owner, _) in streams.leases.items() if not n.startswith("member:")]
    a.stop()
    b.stop()
    await asyncio.gather(*tasks)
    assert sorted(owners) == ["a", "a", "b", "b"]


def test_dead_letter_fields_are_json() -> None:
    """Dead letters keep the raw entry as a JSON object of strings."""
    assert json.loads(json.dumps(inbox._dead_letters.raw_fields({b"a": b"\xff", "b": "c"}))) == {
        "a": "\\xff",
        "b": "c",
    }


async def test_runner_counts_outcomes_in_prometheus_metrics() -> None:
    """Processed, duplicate and dead-lettered messages are counted per consumer and topic."""

    def value(outcome: str) -> float:
        labels = {"consumer": "metrics-g", "topic": "orders.created", "outcome": outcome}
        return REGISTRY.get_sample_value("outboxkit_inbox_messages_total", labels) or 0.0

    before = {o: value(o) for o in ("processed", "duplicate", "dead_lettered")}
    engine, streams = memory_engine(), MemoryStreams()
    mid = uuid_utils.uuid7()
    streams.add("orders.created", entry(message_id=mid))
    streams.add("orders.created", entry(message_id=mid))

    def handler(message: Envelope, session: Session) -> None:
        if message.payload == {"n": 9}:
            raise inbox.Reject("no")

    streams.add("orders.created", entry(payload={"n": 9}))
    runner = inbox.ConsumerRunner(
        _registry(handler), db=engine, subscriber=MemorySubscriber(streams), config=fast_config("metrics-g")
    )
    await runner.run(once=True)
    assert {o: value(o) - before[o] for o in before} == {"processed": 1, "duplicate": 1, "dead_lettered": 1}


async def test_runner_purges_old_inbox_records_while_running() -> None:
    """The retention task deletes records older than the window and logs how many."""
    engine, streams = memory_engine(), MemoryStreams()
    with engine.begin() as conn:
        inbox.record_messages(conn, "billing", [(f"old-{i}", "t") for i in range(3)])
        conn.execute(
            inbox.inbox.update().values(processed_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
        )
    runner = _runner(
        _registry(),
        engine,
        streams,
        retention=dt.timedelta(hours=1),
        retention_interval=dt.timedelta(milliseconds=50),
    )
    with capture_logs() as logs:
        task = asyncio.create_task(runner.run())
        for _ in range(100):
            await asyncio.sleep(0.05)
            if _count(engine, inbox.inbox) == 0:
                break
        runner.stop()
        await task
    assert _count(engine, inbox.inbox) == 0
    assert [e["deleted"] for e in logs if e["event"] == "inbox.retention_purged"] == [3]


async def test_runner_warns_when_stream_outlives_retention() -> None:
    """Entries older than the inbox window still in the stream are reported at start."""
    engine, streams = memory_engine(), MemoryStreams()
    entry_id = streams.add("orders.created", entry())
    streams.added[int(entry_id)] -= 3 * 3600
    with capture_logs() as logs:
        await _runner(_registry(), engine, streams, retention=dt.timedelta(hours=1)).run(once=True)
    warnings = [e for e in logs if e["event"] == "inbox.retention_shorter_than_stream"]
    assert [w["stream"] for w in warnings] == ["orders.created"]


async def test_retry_dead_letter_runs_handler_once_and_marks_it() -> None:
    """A dead letter retried after the cause is fixed commits its effect once and leaves the list."""
    engine, streams = memory_engine(), MemoryStreams()
    broken = {"on": True}

    def handler(message: Envelope, session: Session) -> None:
        if broken["on"]:
            raise RuntimeError("downstream down")
        record_effect(message, session)

    registry = _registry(handler)
    streams.add("orders.created", entry(payload={"n": 1}))
    await _runner(registry, engine, streams, max_deliveries=1).run(once=True)
    [letter] = inbox.select_dead_letters(engine)
    broken["on"] = False
    assert inbox.retry_dead_letter(engine, registry, letter.id) is inbox.Outcome.PROCESSED
    assert inbox.retry_dead_letter(engine, registry, letter.id) is inbox.Outcome.DUPLICATE
    assert _count(engine) == 1
    assert inbox.select_dead_letters(engine) == []
    assert inbox.purge_dead_letters(engine, consumer="billing") == 1


async def test_runner_batch_mode_with_async_handlers(tmp_path: pathlib.Path) -> None:
    """Batch mode commits ``async def`` handlers' batches once and isolates a failing message."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    outbox.upgrade(url)
    engine = create_engine(url)
    domain.create_all(engine)
    streams = MemoryStreams()

    async def handler(message: Envelope, session: AsyncSession) -> None:
        if message.payload == {"n": 2}:
            raise RuntimeError("boom")
        await session.execute(insert(effect).values(message_id=str(message.id), n=1))

    mid = uuid_utils.uuid7()
    for n in range(5):
        streams.add("orders.created", entry(payload={"n": n}, message_id=mid if n == 4 else None))
    streams.add("orders.created", entry(payload={"n": 4}, message_id=mid))
    runner = inbox.ConsumerRunner(
        _registry(handler),
        db=url,
        subscriber=MemorySubscriber(streams),
        config=fast_config("billing", mode=inbox.Mode.BATCH, max_deliveries=2),
    )
    with capture_logs() as logs:
        await runner.run(once=True)
    await runner.aclose()
    assert _count(engine) == 4
    assert len(inbox.select_dead_letters(engine)) == 1
    assert "inbox.batch_failed" in [e["event"] for e in logs]
    engine.dispose()


async def test_runner_holds_at_most_one_batch_per_partition() -> None:
    """With slow handlers the runner reads ahead no more than its batch size (backpressure)."""
    engine, streams = memory_engine(), MemoryStreams()
    seen_pending: list[int] = []

    def slow(message: Envelope, session: Session) -> None:
        seen_pending.append(len(streams.pending("orders.created", "billing")))

    for n in range(40):
        streams.add("orders.created", entry(payload={"n": n}))
    await _runner(_registry(slow), engine, streams, batch_size=5).run(once=True)
    assert len(seen_pending) == 40
    assert max(seen_pending) <= 5


async def test_runner_concurrency_bounds_batches_in_flight_not_streams_read() -> None:
    """Six streams at concurrency 2: every stream is consumed, never more than two handlers at once (#9)."""
    engine, streams = memory_engine(), MemoryStreams()
    lock, active, peak = threading.Lock(), [0], [0]

    def slow(message: Envelope, session: Session) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        record_effect(message, session)
        with lock:
            active[0] -= 1

    registry = inbox.Registry()
    for t in range(6):
        registry.add(f"topic{t}", slow)
        for n in range(3):
            streams.add(f"topic{t}", entry(topic=f"topic{t}", payload={"n": n}))
    runner = _runner(registry, engine, streams, concurrency=2)
    task = asyncio.create_task(runner.run())
    for _ in range(200):
        if _count(engine) == 18:
            break
        await asyncio.sleep(0.05)
    runner.stop()
    await asyncio.wait_for(task, 5)
    assert _count(engine) == 18
    assert peak[0] <= 2
    engine.dispose()
