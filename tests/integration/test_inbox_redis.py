"""The consumer runner against real Redis and PostgreSQL (and the SQL-table broker)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable

import pytest
import redis
import uuid_utils.compat as uuid_utils
from sqlalchemy import create_engine, insert, select
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

import inbox
import outbox
from brokers import StreamLayout, connect_subscriber
from brokers.sql_table.tables import stream_entry
from outbox import ConfigError, Envelope, key_hash
from tests._inbox import count_effects, domain, effect, entry, fast_config, record_effect


def _dead_letters(url: str) -> list[inbox.DeadLetter]:
    engine = create_engine(url)
    try:
        return inbox.select_dead_letters(engine)
    finally:
        engine.dispose()


def _registry(handler: Callable[[Envelope, Session], None] = record_effect) -> inbox.Registry:
    registry = inbox.Registry()
    registry.add("orders.created", handler)
    return registry


def _runner(registry: inbox.Registry, db: str, broker: str, **overrides: object) -> inbox.ConsumerRunner:
    return inbox.ConsumerRunner(
        registry, db=db, subscriber=connect_subscriber(broker), config=fast_config("billing", **overrides)
    )


async def _run_until(
    runners: list[inbox.ConsumerRunner], done: Callable[[], bool], within: float = 20
) -> None:
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        deadline = time.monotonic() + within
        while not done():
            for task in tasks:
                if task.done():
                    task.result()
            assert time.monotonic() < deadline, "consumers did not finish in time"
            await asyncio.sleep(0.05)
    finally:
        for r in runners:
            r.stop()
        await asyncio.gather(*tasks)
        for r in runners:
            await r.aclose()


def _settled(client: redis.Redis, streams: list[str], group: str = "billing") -> Callable[[], bool]:
    def check() -> bool:
        for stream in streams:
            groups = (
                {g["name"].decode(): g for g in client.xinfo_groups(stream)} if client.exists(stream) else {}
            )
            info = groups.get(group)
            if info is None or info["pending"] or info.get("lag"):
                return False
        return True

    return check


@pytest.fixture
def app_db(pg_url: str) -> str:
    engine = create_engine(pg_url)
    domain.create_all(engine)
    engine.dispose()
    return pg_url


async def test_runner_redis_applies_repeated_message_once_across_two_consumers(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """One message delivered 5 times on each of two partitions, read by two consumers at once: one effect."""
    layout = StreamLayout(prefix=stream_prefix, default_partitions=2)
    streams = layout.streams_of("orders.created")
    fields = entry(payload={"n": 1}, message_id=uuid_utils.uuid7())
    for _ in range(5):
        for stream in streams:
            redis_client.xadd(stream, fields)

    def slow(message: Envelope, session: Session) -> None:
        time.sleep(0.05)  # widen the window in which both consumers hold the same id
        record_effect(message, session)

    runners = [
        _runner(_registry(slow), app_db, redis_url, layout=layout, consumer_name=name, concurrency=1)
        for name in ("a", "b")
    ]
    with capture_logs() as logs:
        await _run_until(runners, _settled(redis_client, streams))
    assert count_effects(app_db) == 1
    handled = [e for e in logs if e["event"] == "inbox.message_handled"]
    skipped = [e for e in logs if e["event"] == "inbox.duplicate_skipped"]
    assert len(handled) == 1
    assert len(skipped) == 9
    assert {e["consumer"] for e in skipped} == {"billing"}


async def test_runner_redis_dead_letters_after_limit_while_others_proceed(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """A handler that raises is retried, dead-lettered after the limit; other partitions go on meanwhile."""
    layout = StreamLayout(prefix=stream_prefix, default_partitions=4)
    streams = layout.streams_of("orders.created")
    poison = uuid_utils.uuid7()

    def handler(message: Envelope, session: Session) -> None:
        if message.id == poison:
            raise LookupError("no such customer")
        record_effect(message, session)

    redis_client.xadd(streams[0], entry(payload={"n": -1}, message_id=poison))
    for n in range(40):
        redis_client.xadd(streams[n % 4], entry(payload={"n": n}))
    runner = _runner(
        _registry(handler),
        app_db,
        redis_url,
        layout=layout,
        max_deliveries=3,
        retry_delay=dt.timedelta(milliseconds=200),
        max_retry_delay=dt.timedelta(milliseconds=200),
    )
    with capture_logs() as logs:
        await _run_until([runner], _settled(redis_client, streams))
    assert count_effects(app_db) == 40
    events = [e["event"] for e in logs]
    assert events.count("inbox.handler_failed") == 3
    # Messages of the other partitions were handled while the poison one waited for its retries.
    assert events.index("inbox.message_handled") < events.index("inbox.dead_lettered")
    letters = _dead_letters(app_db)
    assert [(d.message_id, d.error, d.deliveries, d.stream) for d in letters] == [
        (str(poison), "LookupError: no such customer", 3, streams[0])
    ]
    assert all(
        client_pending == 0
        for client_pending in (redis_client.xpending(s, "billing")["pending"] for s in streams)
    )


async def test_runner_redis_dead_letters_malformed_entries(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """Missing fields, bad JSON and invalid UTF-8 are dead-lettered with a reason; the consumer keeps going."""
    stream = f"{stream_prefix}orders.created"
    missing = {k: v for k, v in entry().items() if k != "data"}
    bad_json = {**entry(), "headers": "{oops"}
    bad_utf8 = {k.encode(): v.encode() for k, v in entry().items()} | {b"topic": b"orders.\xc3\x28"}
    for fields in (missing, bad_json, bad_utf8):
        redis_client.xadd(stream, fields)  # type: ignore[arg-type]
    redis_client.xadd(stream, entry(payload={"n": 7}))
    runner = _runner(_registry(), app_db, redis_url, layout=StreamLayout(prefix=stream_prefix))
    with capture_logs() as logs:
        await _run_until([runner], _settled(redis_client, [stream]))
    assert count_effects(app_db) == 1
    letters = _dead_letters(app_db)
    assert [d.error.split(": Expecting")[0] for d in letters] == [
        "undecodable entry: missing field 'data'",
        "undecodable entry: field 'headers' is not valid JSON",
        "undecodable entry: field 'topic' is not valid UTF-8",
    ]
    assert letters[2].fields["topic"] == "orders.\\xc3("
    assert [e["event"] for e in logs].count("inbox.dead_lettered") == 3


async def test_runner_redis_recreates_group_after_restart(
    app_db: str, redis_server_factory: Callable[..., object], stream_prefix: str
) -> None:
    """After Redis restarts empty (NOGROUP), the group is recreated from 0 and repeats are absorbed."""
    server = redis_server_factory(persistence="none")
    url: str = server.url  # type: ignore[attr-defined]
    client = redis.Redis.from_url(url)
    stream = f"{stream_prefix}orders.created"
    first = entry(payload={"n": 1})
    client.xadd(stream, first)
    runner = _runner(_registry(), app_db, url, layout=StreamLayout(prefix=stream_prefix))
    task = asyncio.create_task(runner.run())
    try:
        with capture_logs() as logs:
            deadline = time.monotonic() + 20
            while count_effects(app_db) < 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await asyncio.to_thread(server.restart)  # type: ignore[attr-defined]
            client = redis.Redis.from_url(url)
            client.xadd(stream, first)  # republished after the restart: a repeat
            client.xadd(stream, entry(payload={"n": 2}))
            while count_effects(app_db) < 2 or not _settled(client, [stream])():
                assert time.monotonic() < deadline, "not recovered after the restart"
                await asyncio.sleep(0.05)
    finally:
        runner.stop()
        await task
        await runner.aclose()
    assert count_effects(app_db) == 2
    events = [e["event"] for e in logs]
    assert "inbox.group_recreated" in events
    assert "inbox.duplicate_skipped" in events


async def test_runner_sql_table_broker_end_to_end(db_url: str) -> None:
    """The SQL-table broker in the same database: entries handled once, pending emptied, status reported."""
    engine = create_engine(db_url)
    domain.create_all(engine)
    repeated = entry(payload={"n": 0})
    with engine.begin() as conn:
        rows = [repeated, repeated] + [entry(payload={"n": n}) for n in range(1, 6)]
        conn.execute(
            insert(stream_entry),
            [
                {"stream": "orders.created", "fields": json.dumps(f), "created_at": dt.datetime.now(dt.UTC)}
                for f in rows
            ],
        )
    runner = _runner(_registry(), db_url, db_url)
    await runner.run(once=True)
    await runner.aclose()
    assert count_effects(engine) == 6
    subscriber = connect_subscriber(db_url)
    status = await inbox.consumer_group_status_async(subscriber, group="billing")
    await subscriber.aclose()
    assert [(s.stream, s.pending, s.lag) for s in status] == [("orders.created", 0, 0)]
    engine.dispose()


async def test_consumer_group_status_reports_pending_and_lag(
    redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """Status shows entries pending and behind the group, for ``outboxkit status``."""
    stream = f"{stream_prefix}orders.created"
    for n in range(5):
        redis_client.xadd(stream, entry(payload={"n": n}))
    redis_client.xgroup_create(stream, "billing", id="0")
    redis_client.xreadgroup("billing", "c1", {stream: ">"}, count=2)
    rows = await asyncio.to_thread(inbox.consumer_group_status, redis_url, prefix=stream_prefix)
    assert [(r.stream, r.group, r.pending, r.behind, r.lag) for r in rows] == [(stream, "billing", 2, 3, 5)]


def test_runner_refuses_block_longer_than_socket_timeout(redis_url: str) -> None:
    """A blocking read as long as the socket timeout is refused before anything starts."""
    subscriber = connect_subscriber(redis_url, socket_timeout=dt.timedelta(seconds=3))
    with pytest.raises(ConfigError, match="socket timeout"):
        inbox.ConsumerRunner(
            _registry(),
            db="sqlite://",
            subscriber=subscriber,
            config=fast_config("billing", block=dt.timedelta(seconds=3)),
        )


async def test_runner_redis_keeps_per_key_order_with_two_consumers(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """Two consumers sharing four partitions handle every key's messages in publish order."""
    layout = StreamLayout(prefix=stream_prefix, default_partitions=4)
    streams = layout.streams_of("orders.created")
    for n in range(200):
        key = f"k{n % 10}"
        mid = uuid_utils.uuid7()
        redis_client.xadd(
            layout.stream_for("orders.created", key_hash(key, mid)),
            entry(payload={"n": n}, key=key, message_id=mid),
        )

    def slow(message: Envelope, session: Session) -> None:
        time.sleep(0.02)  # long enough for the second consumer to take its share
        record_effect(message, session)

    runners = [
        _runner(
            _registry(slow),
            app_db,
            redis_url,
            layout=layout,
            consumer_name=name,
            lease_ttl=dt.timedelta(seconds=1),
        )
        for name in ("a", "b")
    ]
    with capture_logs() as logs:
        await _run_until(runners, _settled(redis_client, streams))
    engine = create_engine(app_db)
    with engine.connect() as conn:
        rows = conn.execute(select(effect.c.key, effect.c.n).order_by(effect.c.id)).all()
    engine.dispose()
    assert len(rows) == 200
    by_key: dict[str, list[int]] = {}
    for key, n in rows:
        by_key.setdefault(key, []).append(n)
    assert all(ns == sorted(ns) for ns in by_key.values())
    owners = {e["consumer_name"] for e in logs if e["event"] == "inbox.partition_acquired"}
    assert owners == {"a", "b"}


async def test_runner_survives_database_restart_without_dead_letters(
    pg_server_factory: Callable[..., object], redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """PostgreSQL killed and restarted mid-stream: every message commits once, none is dead-lettered."""
    server = pg_server_factory(durable=True)
    db: str = server.create_database("app")  # type: ignore[attr-defined]
    outbox.upgrade(db)
    engine = create_engine(db)
    domain.create_all(engine)
    engine.dispose()
    stream = f"{stream_prefix}orders.created"
    for n in range(60):
        redis_client.xadd(stream, entry(payload={"n": n}))

    def slow(message: Envelope, session: Session) -> None:
        time.sleep(0.01)
        record_effect(message, session)

    runner = _runner(
        _registry(slow), db, redis_url, layout=StreamLayout(prefix=stream_prefix), max_deliveries=2
    )
    task = asyncio.create_task(runner.run())
    try:
        with capture_logs() as logs:
            deadline = time.monotonic() + 30
            while count_effects(db) < 10:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await asyncio.to_thread(server.kill)  # type: ignore[attr-defined]
            await asyncio.sleep(0.5)
            await asyncio.to_thread(server.start)  # type: ignore[attr-defined]
            while not _settled(redis_client, [stream])():
                assert time.monotonic() < deadline, "not recovered after the database restart"
                await asyncio.sleep(0.05)
    finally:
        runner.stop()
        await task
        await runner.aclose()
    assert count_effects(db) == 60
    assert _dead_letters(db) == []
    events = [e["event"] for e in logs]
    assert "inbox.storage_unavailable" in events
    assert "inbox.dead_lettered" not in events


def _many_topics(count: int) -> inbox.Registry:
    registry = inbox.Registry()
    for t in range(count):
        registry.add(f"topic{t}", record_effect)
    return registry


async def test_runner_redis_reads_more_streams_than_processes_times_concurrency(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """Six topics of two partitions (12 streams) on two processes of concurrency 2 are all consumed (#9)."""
    layout = StreamLayout(prefix=stream_prefix, default_partitions=2)
    streams = [s for t in range(6) for s in layout.streams_of(f"topic{t}")]
    for stream in streams:
        for n in range(3):
            redis_client.xadd(
                stream, entry(topic=stream.removeprefix(stream_prefix).split(":")[0], payload={"n": n})
            )
    runners = [
        _runner(_many_topics(6), app_db, redis_url, layout=layout, consumer_name=name, concurrency=2)
        for name in ("a", "b")
    ]
    await _run_until(runners, _settled(redis_client, streams))
    assert count_effects(app_db) == 36


async def test_runner_sql_table_broker_reads_more_streams_than_concurrency(db_url: str) -> None:
    """Twelve topics on the SQL-table broker are all consumed by one process of concurrency 2 (#9)."""
    engine = create_engine(db_url)
    domain.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(stream_entry),
            [
                {
                    "stream": f"topic{t}",
                    "fields": json.dumps(entry(topic=f"topic{t}", payload={"n": t})),
                    "created_at": dt.datetime.now(dt.UTC),
                }
                for t in range(12)
            ],
        )
    runner = _runner(_many_topics(12), db_url, db_url, concurrency=2)
    await _run_until([runner], lambda: count_effects(engine) == 12)
    engine.dispose()


async def test_runner_redis_refuses_partition_layout_differing_from_broker(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """Entries on four partitions and a consumer reading one: the start fails with the figures (#9)."""
    relay_layout = StreamLayout(prefix=stream_prefix, default_partitions=4)
    for n in range(5):
        redis_client.xadd(relay_layout.stream_for("orders.created", n), entry(payload={"n": n}))
    runner = _runner(_registry(), app_db, redis_url, layout=StreamLayout(prefix=stream_prefix))
    with pytest.raises(ConfigError) as caught:
        await runner.run(once=True)
    await runner.aclose()
    assert str(caught.value) == (
        "topic 'orders.created' is read with 1 partition(s), but the broker holds 4 stream(s) of it"
        " for 4 partition(s) with 5 unread entries: give the consumer the relay's"
        " --topic-partitions/--default-partitions"
    )
    assert not redis_client.exists(f"{stream_prefix}orders.created")  # no empty stream created
    assert count_effects(app_db) == 0


async def test_runner_redis_accepts_drained_streams_of_an_old_layout(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """Repartitioning after the group finished the old stream starts normally (#9)."""
    for n in range(3):
        redis_client.xadd(f"{stream_prefix}orders.created", entry(payload={"n": n}))
    await _run_until(
        [_runner(_registry(), app_db, redis_url, layout=StreamLayout(prefix=stream_prefix))],
        lambda: count_effects(app_db) == 3,
    )
    wider = StreamLayout(prefix=stream_prefix, default_partitions=2)
    redis_client.xadd(wider.stream_for("orders.created", 1), entry(payload={"n": 3}))
    runner = _runner(_registry(), app_db, redis_url, layout=wider)
    await runner.run(once=True)
    await runner.aclose()
    assert count_effects(app_db) == 4


async def test_runner_sql_table_broker_refuses_partition_layout_differing_from_broker(db_url: str) -> None:
    """Entries on one stream and a consumer reading four partitions: the start fails with the figures (#9)."""
    engine = create_engine(db_url)
    domain.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(stream_entry),
            [
                {
                    "stream": "orders.created",
                    "fields": json.dumps(entry(payload={"n": n})),
                    "created_at": dt.datetime.now(dt.UTC),
                }
                for n in range(3)
            ],
        )
    runner = _runner(_registry(), db_url, db_url, layout=StreamLayout(default_partitions=4))
    with pytest.raises(ConfigError) as caught:
        await runner.run(once=True)
    await runner.aclose()
    assert str(caught.value) == (
        "topic 'orders.created' is read with 4 partition(s), but the broker holds 1 stream(s) of it"
        " for 1 partition(s) with 3 unread entries: give the consumer the relay's"
        " --topic-partitions/--default-partitions"
    )
    assert count_effects(engine) == 0
    engine.dispose()


async def test_runner_redis_warns_when_acl_forbids_the_layout_check(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """A Redis user without SCAN cannot check the layout: the consumer warns once and still consumes (#9)."""
    user = f"noscan{uuid_utils.uuid7().hex[:8]}"
    redis_client.execute_command(
        "ACL", "SETUSER", user, "on", ">pw", "~*", "resetchannels", "-@all", "+@stream", "+ping", "+hello",
        "+evalsha", "+eval", "+script|load", "+script|exists", "+get", "+set", "+del", "+time", "+zadd",
        "+zremrangebyscore", "+zcard", "+pexpire", "+exists",
    )  # fmt: skip
    redis_client.xadd(f"{stream_prefix}orders.created", entry(payload={"n": 0}))
    url = redis_url.replace("redis://", f"redis://{user}:pw@", 1)
    runner = _runner(_registry(), app_db, url, layout=StreamLayout(prefix=stream_prefix))
    with capture_logs() as logs:
        await runner.run(once=True)
    await runner.aclose()
    redis_client.execute_command("ACL", "DELUSER", user)
    warned = [e for e in logs if e["event"] == "inbox.partition_layout_unchecked"]
    assert [e["error"] for e in warned] == ["NoPermissionError"]
    assert count_effects(app_db) == 1


def _applied(url: str) -> list[int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [int(n) for n in conn.execute(select(effect.c.n).order_by(effect.c.id)).scalars()]
    finally:
        engine.dispose()


async def _dead_letter_key_k(app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str,
                             mode: str) -> tuple[inbox.Registry, dict[str, bool], Callable[..., inbox.ConsumerRunner]]:  # fmt: skip
    """Key k's first message n=0 fails until fixed and is dead-lettered; then n=1 of k and n=2 of other arrive."""
    layout = StreamLayout(prefix=stream_prefix)
    stream = layout.streams_of("orders.created")[0]
    broken = {"on": True}

    def handler(message: Envelope, session: Session) -> None:
        if broken["on"] and isinstance(message.payload, dict) and message.payload.get("n") == 0:
            raise LookupError("no such customer")
        record_effect(message, session)

    registry = _registry(handler)

    def make() -> inbox.ConsumerRunner:
        return _runner(registry, app_db, redis_url, layout=layout, on_dead_letter=mode)

    redis_client.xadd(stream, entry(payload={"n": 0}, key="k"))
    redis_client.xadd(stream, entry(payload={"n": 1}, key="k"))
    redis_client.xadd(stream, entry(payload={"n": 2}, key="other"))
    await _run_until([make()], _settled(redis_client, [stream]))
    return registry, broken, make


async def test_consumer_park_key_holds_later_messages_until_retry_restores_order(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """With on_dead_letter=park-key later messages of a dead-lettered key wait; retrying it hands them on in order (#9)."""
    registry, broken, make = await _dead_letter_key_k(
        app_db, redis_url, redis_client, stream_prefix, "park-key"
    )
    assert _applied(app_db) == [2]  # other keys go on, n=1 waits behind the dead letter of k
    letters = _dead_letters(app_db)
    assert [d.error for d in letters] == ["LookupError: no such customer", inbox.PARKED_ERROR]
    broken["on"] = False
    engine = create_engine(app_db)
    inbox.retry_dead_letter(engine, registry, letters[0].id)  # what `consumer-dead-letters retry` runs
    engine.dispose()
    with capture_logs() as logs:
        await _run_until([make()], lambda: len(_applied(app_db)) == 3)
    assert _applied(app_db) == [2, 0, 1]
    assert "inbox.parked_released" in [e["event"] for e in logs]
    assert _dead_letters(app_db) == []


async def test_consumer_park_key_purge_releases_the_key(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """Purging the dead letter of a parked key hands its later messages to the handler (#9)."""
    _, _, make = await _dead_letter_key_k(app_db, redis_url, redis_client, stream_prefix, "park-key")
    first = _dead_letters(app_db)[0]
    engine = create_engine(app_db)
    assert inbox.purge_dead_letters(engine, ids=[first.id]) == 1  # what `consumer-dead-letters purge` runs
    engine.dispose()
    await _run_until([make()], lambda: len(_applied(app_db)) == 2)
    assert _applied(app_db) == [2, 1]


async def test_consumer_skip_mode_handles_past_a_dead_letter(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """With on_dead_letter=skip later messages of a dead-lettered key are handled at once (#9)."""
    await _dead_letter_key_k(app_db, redis_url, redis_client, stream_prefix, "skip")
    assert sorted(_applied(app_db)) == [1, 2]
    assert [d.error for d in _dead_letters(app_db)] == ["LookupError: no such customer"]


async def test_consumer_retrying_message_holds_up_only_its_key(
    app_db: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """A message that fails and is retried holds up only its key: other keys of its partition go first (#9)."""
    layout = StreamLayout(prefix=stream_prefix)  # one partition: every key in one stream
    stream = layout.streams_of("orders.created")[0]
    failures = {"left": 2}

    def flaky(message: Envelope, session: Session) -> None:
        if isinstance(message.payload, dict) and message.payload.get("n") == 0 and failures["left"]:
            failures["left"] -= 1
            raise TimeoutError("payment provider slow")
        record_effect(message, session)

    for n, key in ((0, "k"), (1, "k"), (2, "other"), (3, "third")):
        redis_client.xadd(stream, entry(payload={"n": n}, key=key))
    runner = _runner(
        _registry(flaky), app_db, redis_url, layout=layout, retry_delay=dt.timedelta(milliseconds=50)
    )
    await _run_until([runner], _settled(redis_client, [stream]))
    assert _applied(app_db) == [2, 3, 0, 1]
    assert _dead_letters(app_db) == []
