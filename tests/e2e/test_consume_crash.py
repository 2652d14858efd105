"""``outboxkit consume`` as real processes: SIGKILL at the worst moments, SIGTERM, usage errors."""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import create_engine, insert

from brokers.sql_table.tables import stream_entry
from outbox.errors import MIGRATE_HINT
from tests._inbox import count_effects, domain, entry, wait_until

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


@pytest.fixture
def app_db(pg_url: str) -> str:
    engine = create_engine(pg_url)
    domain.create_all(engine)
    engine.dispose()
    return pg_url


class Consumer:
    """One ``outboxkit consume`` process writing JSON logs to a file."""

    def __init__(self, tmp: pathlib.Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "outboxkit",
                "--log-format",
                "json",
                "consume",
                "tests.e2e.inbox_app:registry",
                "--consumer-name",
                name,
                *args,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def events(self) -> list[dict[str, object]]:
        result = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                result.append(json.loads(line))
            except ValueError:
                continue
        return result

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def consumers(tmp_path: pathlib.Path, app_db: str, redis_url: str, stream_prefix: str) -> Iterator[callable]:  # type: ignore[valid-type]
    started: list[Consumer] = []

    def start(name: str, mode: str = "message", **env: str) -> Consumer:
        args = [
            "--mode",
            mode,
            "--db",
            app_db,
            "--broker",
            redis_url,
            "--group",
            "billing",
            "--stream-prefix",
            stream_prefix,
            "--lease-ttl",
            "1",
            "--claim-idle",
            "1",
            "--block",
            "0.2",
            "--retry-delay",
            "0.01",
            "--retention",
            "0",
            "--shutdown-timeout",
            "5",
        ]
        consumer = Consumer(tmp_path, name, args, env)
        started.append(consumer)
        return consumer

    yield start
    for consumer in started:
        consumer.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def _pending(client: redis.Redis, stream: str) -> int:
    return int(client.xpending(stream, "billing")["pending"])


def _settled(client: redis.Redis, stream: str) -> bool:
    groups = {g["name"]: g for g in client.xinfo_groups(stream)}
    info = groups.get(b"billing")
    return info is not None and info["pending"] == 0 and info["lag"] == 0


@pytest.mark.parametrize("mode", ["message", "batch"])
def test_consume_killed_after_commit_before_ack_skips_duplicate(
    consumers: callable,
    app_db: str,
    redis_client: redis.Redis,
    stream_prefix: str,  # type: ignore[valid-type]
    mode: str,
) -> None:
    """SIGKILL between commit and XACK: redelivered, recognised as a duplicate, acknowledged; both modes (#9)."""
    stream = f"{stream_prefix}orders.created"
    first = entry(payload={"n": 1})
    second = entry(payload={"n": 2})
    redis_client.xadd(stream, first)
    redis_client.xadd(stream, second)
    a = consumers("a", mode, INBOX_E2E_KILL_AFTER_COMMIT="1")
    assert a.wait() == -signal.SIGKILL
    # Per message, only the first committed; a batch commits both entries in one transaction.
    committed = [first] if mode == "message" else [first, second]
    assert count_effects(app_db) == len(committed)
    assert _pending(redis_client, stream) == 2  # committed but never acknowledged
    b = consumers("b", mode)
    wait_until(lambda: _settled(redis_client, stream))
    b.proc.send_signal(signal.SIGTERM)
    assert b.wait() == 0
    assert count_effects(app_db) == 2
    skipped = [e for e in b.events() if e.get("event") == "inbox.duplicate_skipped"]
    assert [(e["message_id"], e["consumer"], e["attempt"]) for e in skipped] == [
        (m["id"], "billing", 2) for m in committed
    ]


@pytest.mark.parametrize("mode", ["message", "batch"])
def test_consume_killed_mid_handler_is_retried_by_another_consumer(
    consumers: callable,
    app_db: str,
    redis_client: redis.Redis,
    stream_prefix: str,
    tmp_path: pathlib.Path,  # type: ignore[valid-type]
    mode: str,
) -> None:
    """SIGKILL inside a handler: a standby consumer takes the partition over, effect once; both modes (#9)."""
    stream = f"{stream_prefix}orders.created"
    marker = tmp_path / "in-handler"
    hung = entry(payload={"n": 1})
    redis_client.xadd(stream, hung)
    redis_client.xadd(stream, entry(payload={"n": 2}))
    a = consumers("a", mode, INBOX_E2E_HANG_ON="1", INBOX_E2E_MARKER=str(marker))
    wait_until(marker.exists)
    b = consumers("b", mode)  # a standby: the partition's lease is a's
    time.sleep(0.5)
    a.proc.kill()
    assert a.wait() == -signal.SIGKILL
    wait_until(lambda: _settled(redis_client, stream))
    b.proc.send_signal(signal.SIGTERM)
    assert b.wait() == 0
    assert count_effects(app_db) == 2
    events = b.events()
    if mode == "batch":  # a batch logs one line with its count; a lone entry logs its own
        batches = [e for e in events if e.get("event") == "inbox.batch_handled"]
        alone = [e for e in events if e.get("event") == "inbox.message_handled"]
        assert sum(int(str(e["processed"])) for e in batches) + len(alone) == 2, events
        return
    handled = {e["message_id"]: e for e in events if e.get("event") == "inbox.message_handled"}
    assert handled[hung["id"]]["attempt"] == 2


def test_consume_sigterm_finishes_in_flight_message_and_exits_zero(
    consumers: callable,
    app_db: str,
    redis_client: redis.Redis,
    stream_prefix: str,  # type: ignore[valid-type]
) -> None:
    """SIGTERM lets the message in flight commit and be acknowledged, then the process exits 0."""
    stream = f"{stream_prefix}orders.created"
    for n in range(20):
        redis_client.xadd(stream, entry(payload={"n": n}))
    port = _free_port()
    a = consumers(
        "a", INBOX_E2E_SLOW="0.05", OUTBOXKIT_CONSUME_BATCH_SIZE="5", OUTBOXKIT_CONSUME_METRICS_PORT=str(port)
    )
    wait_until(lambda: count_effects(app_db) >= 1)
    wait_until(lambda: 'outcome="processed"' in _metrics(port))
    assert (
        'outboxkit_inbox_messages_total{consumer="billing",outcome="processed",topic="orders.created"}'
        in _metrics(port)
    )
    a.proc.send_signal(signal.SIGTERM)
    assert a.wait() == 0
    done = count_effects(app_db)
    assert done < 20
    assert done % 5 == 0  # the batch in hand was finished
    assert _pending(redis_client, stream) == 0  # nothing committed is left unacknowledged
    assert int(redis_client.xinfo_groups(stream)[0]["lag"]) == 20 - done
    events = [e.get("event") for e in a.events()]
    assert events[-1] == "inbox.consumer_stopped"


def test_consume_usage_errors_are_one_line_exit_2(
    tmp_path: pathlib.Path, pg_empty_url: str, redis_url: str
) -> None:
    """A bad registry path or a database without the inbox table: one stderr line, exit 2."""
    base = [sys.executable, "-m", "outboxkit", "--log-level", "error", "consume"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bad = subprocess.run(
        [*base, "tests.e2e.nope:registry", "--db", "sqlite://", "--broker", redis_url, "--group", "g"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    [line] = bad.stderr.strip().splitlines()
    assert line.startswith(
        "outboxkit: error: cannot import 'tests.e2e.nope': No module named 'tests.e2e.nope'"
    )
    missing = subprocess.run(
        [
            *base,
            "tests.e2e.inbox_app:registry",
            "--db",
            pg_empty_url,
            "--broker",
            redis_url,
            "--group",
            "g",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == (
        f"outboxkit: error: inbox table 'outboxkit_inbox' is missing: {MIGRATE_HINT}"
    )
    assert "secret" not in missing.stderr


def test_consume_once_on_the_sql_table_broker(sqlite_url: str) -> None:
    """The embedded default: SQLite as database and broker; ``--once`` drains the stream and exits 0."""
    engine = create_engine(sqlite_url)
    domain.create_all(engine)
    fields = [entry(payload={"n": n}) for n in range(5)]
    with engine.begin() as conn:
        conn.execute(
            insert(stream_entry),
            [
                {"stream": "orders.created", "fields": json.dumps(f), "created_at": dt.datetime.now(dt.UTC)}
                for f in fields
            ],
        )
    engine.dispose()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "outboxkit",
            "--log-format",
            "json",
            "consume",
            "tests.e2e.inbox_app:registry",
            "--db",
            sqlite_url,
            "--broker",
            sqlite_url,
            "--group",
            "billing",
            "--once",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert count_effects(sqlite_url) == 5
    events = [json.loads(line)["event"] for line in result.stderr.splitlines() if line.startswith("{")]
    assert events.count("inbox.message_handled") == 5


def test_consume_partition_layout_mismatch_is_one_line_exit_2(
    pg_url: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """`outboxkit consume` with fewer partitions than the relay wrote: one stderr line, exit 2 (#9)."""
    engine = create_engine(pg_url)
    domain.create_all(engine)
    engine.dispose()
    redis_client.xadd(f"{stream_prefix}orders.created:1", entry(payload={"n": 1}))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "outboxkit",
            "--log-level",
            "error",
            "consume",
            "tests.e2e.inbox_app:registry",
            "--db",
            pg_url,
            "--broker",
            redis_url,
            "--group",
            "billing",
            "--stream-prefix",
            stream_prefix,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        (
            "outboxkit: error: topic 'orders.created' is read with 1 partition(s), but the broker holds"
            " 1 stream(s) of it for 2 partition(s) with 1 unread entries: give the consumer the relay's"
            " --topic-partitions/--default-partitions"
        )
    ]
