"""Helpers of the relay tests: write events, read streams, check order, run a relay in a thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import outbox
from relay import Relay, RelayConfig


def write_events(url: str, count: int, *, keys: int = 5, topic: str = "orders", start: int = 0,
                 size: int = 0, per_tx: int = 100, **message: object) -> list[str]:  # fmt: skip
    """Commit ``count`` events ``{"seq": i, "key": k}`` with keys ``k0..k{keys-1}``; return their ids."""
    engine = create_engine(url, poolclass=NullPool)
    ids: list[str] = []
    pad = "x" * size
    try:
        for first in range(start, start + count, per_tx):
            batch = [
                outbox.Message(topic=topic, key=f"k{i % keys}", payload={"seq": i, "pad": pad}, **message)  # type: ignore[arg-type]
                for i in range(first, min(first + per_tx, start + count))
            ]
            with engine.begin() as conn:
                ids += [str(u) for u in outbox.publish_many(conn, batch)]
    finally:
        engine.dispose()
    return ids


def outbox_count(url: str, where: str = "published_at IS NULL") -> int:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM outbox WHERE {where}")).scalar_one())
    finally:
        engine.dispose()


def redis_entries(client: redis.Redis, streams: Sequence[str]) -> list[dict[str, str]]:
    """Every entry of ``streams`` (decoded fields), stream by stream, in stream order."""
    out: list[dict[str, str]] = []
    for stream in streams:
        for _entry_id, fields in client.xrange(stream):
            out.append({k.decode(): v.decode() for k, v in fields.items()})
    return out


def sql_broker_entries(url: str, stream: str) -> list[dict[str, str]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT fields FROM outboxkit_stream_entry WHERE stream = :s ORDER BY id"), {"s": stream}
            )
            return [json.loads(r[0]) for r in rows]
    finally:
        engine.dispose()


def seq_of(fields: dict[str, str]) -> int:
    return int(json.loads(fields["data"])["seq"])


def assert_complete_and_ordered(entries: Sequence[dict[str, str]], expected_ids: Sequence[str]) -> None:
    """Every expected id is present, and per key the first occurrences are in write order.

    First occurrences are what a consumer with an inbox applies (duplicates are skipped),
    so this is "each event applied once, in per-key order".
    """
    seen: set[str] = set()
    last: dict[str, int] = {}
    for fields in entries:
        if fields["id"] in seen:
            continue
        seen.add(fields["id"])
        key, seq = fields.get("subject", ""), seq_of(fields)
        assert seq > last.get(key, -1), f"key {key}: seq {seq} applied after {last[key]}"
        last[key] = seq
    missing = set(expected_ids) - seen
    assert not missing, f"{len(missing)} committed events missing from the streams"


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


@contextmanager
def relay_thread(config: RelayConfig, **kwargs: object) -> Iterator[Relay]:
    """Run a :class:`Relay` in a thread for the block, then stop it and re-raise its error if any."""
    daemon = Relay(config, **kwargs)  # type: ignore[arg-type]
    errors: list[BaseException] = []

    def target() -> None:
        try:
            daemon.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="relay", daemon=True)
    thread.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        thread.join(timeout=15)
        assert not thread.is_alive(), "relay did not stop within 15 s"
    if errors:
        raise errors[0]
