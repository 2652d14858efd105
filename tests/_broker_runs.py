"""Relay and consumer runs on a real broker, as ``outboxkit`` processes: events, processes, checks.

Shared by the Redis Cluster and Redis Sentinel end-to-end tests.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

import outbox
from tests._cli import REPO_ROOT, cli_env
from tests._inbox import count_effects, domain, effect
from tests._relay_support import outbox_count, wait_until

TOPIC = "orders.created"
PARTITIONS = 6


def write(url: str, start: int, count: int, *, keys: int = 12) -> None:
    """Commit events ``{"n": i}`` for ``i`` in ``start..start+count-1``, key ``k{i % keys}``."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            outbox.publish_many(
                conn,
                [
                    outbox.Message(topic=TOPIC, key=f"k{i % keys}", payload={"n": i})
                    for i in range(start, start + count)
                ],
            )
    finally:
        engine.dispose()


def assert_effects_once_in_key_order(url: str, total: int) -> None:
    """Every event applied exactly once, and per key in write order (``effect.id`` is the apply order)."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        rows = conn.execute(select(effect.c.key, effect.c.n).order_by(effect.c.id)).all()
    engine.dispose()
    applied = [n for _, n in rows]
    assert sorted(applied) == list(range(total)), "lost or doubled effects"
    last: dict[str, int] = {}
    for key, n in rows:
        assert n > last.get(key, -1), f"key {key}: {n} applied after {last[key]}"
        last[key] = n


class Process:
    """An ``outboxkit`` subprocess whose JSON log goes to a file."""

    def __init__(self, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "outboxkit", "--log-format", "json", *args],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=cli_env(),
            cwd=REPO_ROOT,
        )

    def events(self) -> list[dict[str, object]]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@contextmanager
def processes(*procs: Process) -> Iterator[tuple[Process, ...]]:
    try:
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def relay_args(db: str, broker: str, prefix: str, *extra: str) -> list[str]:
    return ["relay", "--db", db, "--broker", broker, "--stream-prefix", prefix,
            "--default-partitions", str(PARTITIONS), "--poll-interval", "0.05", *extra]  # fmt: skip


def consume_args(db: str, broker: str, prefix: str, *extra: str) -> list[str]:
    return ["consume", "tests.e2e.inbox_app:registry", "--db", db, "--broker", broker,
            "--group", "billing", "--stream-prefix", prefix, "--default-partitions", str(PARTITIONS),
            "--block", "0.2", "--claim-idle", "2", "--lease-ttl", "2", "--retention", "0", *extra]  # fmt: skip


def create_domain(url: str) -> str:
    """Create the handlers' table in the database at ``url``; return the URL."""
    engine = create_engine(url)
    domain.create_all(engine)
    engine.dispose()
    return url


def run_and_kill_under_load(
    db: str, broker: str, prefix: str, logs: Path, kill: Callable[[], None], *, total: int = 3000
) -> list[dict[str, object]]:
    """Relay and consume ``total`` events written over ~10 s; call ``kill`` a third of the way in.

    Checks every event applied once, in key order, and that the relay met the
    outage and recovered; returns the relay's log events.
    """
    chunk = 20
    relay = Process(logs / "relay.log", *relay_args(db, broker, prefix, "--broker-durability", "replicas=1"))
    consumer = Process(logs / "consumer.log", *consume_args(db, broker, prefix))
    written = 0

    def writer() -> None:
        nonlocal written
        while written < total:
            write(db, written, chunk)
            written += chunk
            time.sleep(0.05)  # ~10 s of writes: the kill lands in the middle

    with processes(relay, consumer):
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            wait_until(lambda: written > total // 3 and count_effects(db) > 0, timeout=60)
            kill()
        finally:
            thread.join(120)
        wait_until(lambda: outbox_count(db) == 0, timeout=90)
        wait_until(lambda: count_effects(db) >= total, timeout=90)
        time.sleep(1)  # a late duplicate would show up now
    assert_effects_once_in_key_order(db, total)
    events = relay.events()
    assert not [e for e in events if e.get("level") in {"error", "critical"}]
    failed = {"relay.publish_failed", "relay.publish_partly_failed"}
    failures = [i for i, e in enumerate(events) if e.get("event") in failed]
    published = [i for i, e in enumerate(events) if e.get("event") == "relay.batch_published"]
    assert failures, "the kill must land while the relay publishes"
    assert published
    assert published[-1] > failures[-1], "the relay must recover"
    return events
