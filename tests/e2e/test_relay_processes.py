"""Real `outboxkit relay` processes: SIGKILL, SIGSTOP, SIGTERM, several replicas, SQLite, memory."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import outbox
from tests._cli import REPO_ROOT, cli_env, run_cli
from tests._relay_support import (
    assert_complete_and_ordered,
    outbox_count,
    redis_entries,
    sql_broker_entries,
    wait_until,
    write_events,
)
from tests._servers import free_port

pytestmark = pytest.mark.e2e


class RelayProcess:
    """One `outboxkit relay` subprocess whose JSON log goes to a file."""

    def __init__(self, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "outboxkit", "--log-format", "json", "relay", *args],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=cli_env(),
            cwd=REPO_ROOT,
        )

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(10)

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]


@contextmanager
def relays(tmp_path: Path, count: int, *args: str) -> Iterator[list[RelayProcess]]:
    procs = [RelayProcess(tmp_path / f"relay{i}.log", *args) for i in range(count)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()


class Writers:
    """Threads committing events with keys k0..k19 until stopped; ids in commit order.

    Payloads are ``{field: i}`` on ``topic`` (``{"seq": i}`` on ``orders`` unless told).
    """

    def __init__(
        self,
        url: str,
        threads: int = 2,
        per_tx: int = 5,
        *,
        topic: str = "orders",
        field: str = "seq",
        pause: float = 0.002,
    ) -> None:
        self.url = url
        self.pause = pause
        self.topic, self.field = topic, field
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._threads = [
            threading.Thread(target=self._run, args=(per_tx,), daemon=True) for _ in range(threads)
        ]

    def _take(self, n: int) -> int:
        with self._lock:
            first = self._next
            self._next += n
            return first

    def _run(self, per_tx: int) -> None:
        engine = create_engine(self.url, poolclass=NullPool)
        while not self._stop.is_set():
            with engine.begin() as conn:
                # Writers of one key serialise (as an app does with the aggregate's row
                # lock); the sequence numbers are taken under that lock, so the
                # order they express is the order the events were written in.
                conn.execute(text("SELECT pg_advisory_xact_lock(42)"))
                first = self._take(per_tx)
                messages = [
                    outbox.Message(topic=self.topic, key=f"k{i % 20}", payload={self.field: i})
                    for i in range(first, first + per_tx)
                ]
                ids = [str(u) for u in outbox.publish_many(conn, messages)]
            with self._lock:
                self.ids += ids
            time.sleep(self.pause)
        engine.dispose()

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


def _args(pg_url: str, redis_url: str, prefix: str, *extra: str) -> list[str]:
    return ["--db", pg_url, "--broker", redis_url, "--stream-prefix", prefix, "--poll-interval", "0.1",
            "--lease-ttl", "2", *extra]  # fmt: skip


def _wait_all_own_partitions(procs: list[RelayProcess]) -> None:
    """Wait until every relay has published a batch, i.e. has come up and leased its share."""

    def all_busy() -> bool:
        return all(any(e["event"] == "relay.batch_published" for e in p.events()) for p in procs)

    wait_until(all_busy, timeout=30)


def _drained(url: str, client: redis.Redis, stream: str, expected: int) -> bool:
    return outbox_count(url) == 0 and len({f["id"] for f in redis_entries(client, [stream])}) >= expected


@pytest.mark.slow
def test_relay_process_kill9_repeatedly_loses_nothing(pg_url: str, redis_url: str, stream_prefix: str,
                                                      redis_client: redis.Redis, tmp_path: Path) -> None:  # fmt: skip
    """SIGKILL a relay again and again while writers commit: every event is in its stream, per-key order holds."""
    rng = random.Random(7)
    stream = f"{stream_prefix}orders"
    args = _args(pg_url, redis_url, stream_prefix, "--batch-size", "50")
    with Writers(pg_url) as writers:
        for i in range(6):
            proc = RelayProcess(tmp_path / f"r{i}.log", *args)
            time.sleep(rng.uniform(0.4, 1.0))
            proc.kill()
    final = RelayProcess(tmp_path / "final.log", *args)
    try:
        wait_until(lambda: _drained(pg_url, redis_client, stream, len(writers.ids)), timeout=30)
        final.signal(signal.SIGTERM)
        assert final.wait(10) == 0
    finally:
        final.kill()
    assert len(writers.ids) > 200
    assert_complete_and_ordered(redis_entries(redis_client, [stream]), writers.ids)


@pytest.mark.slow
def test_relay_three_processes_one_killed_keep_order(pg_url: str, redis_url: str, stream_prefix: str,
                                                     redis_client: redis.Redis, tmp_path: Path) -> None:  # fmt: skip
    """Three relays share the partitions; one is SIGKILLed mid-run; the others take its share, order holds."""
    stream = f"{stream_prefix}orders"
    with relays(tmp_path, 3, *_args(pg_url, redis_url, stream_prefix, "--batch-size", "20")) as procs:
        with Writers(pg_url) as writers:
            _wait_all_own_partitions(procs)
            procs[1].kill()
            time.sleep(3.0)
        wait_until(lambda: _drained(pg_url, redis_client, stream, len(writers.ids)), timeout=30)
        for p in (procs[0], procs[2]):
            p.signal(signal.SIGTERM)
        assert procs[0].wait(10) == 0
        assert procs[2].wait(10) == 0
    assert_complete_and_ordered(redis_entries(redis_client, [stream]), writers.ids)
    published = [sum(int(e.get("published", 0)) for e in p.events() if e["event"] == "relay.batch_published")  # type: ignore[call-overload]
                 for p in procs]  # fmt: skip
    assert published[0] > 0, published  # the survivors shared the work
    assert published[2] > 0, published


@pytest.mark.slow
def test_relay_sigstopped_past_its_lease_does_not_break_order(pg_url: str, redis_url: str, stream_prefix: str,
                                                              redis_client: redis.Redis, tmp_path: Path) -> None:  # fmt: skip
    """A relay paused (SIGSTOP) past its lease and resumed: consumers still apply each event once, in key order."""
    stream = f"{stream_prefix}orders"
    with relays(tmp_path, 2, *_args(pg_url, redis_url, stream_prefix, "--batch-size", "20")) as procs:
        with Writers(pg_url) as writers:
            _wait_all_own_partitions(procs)
            procs[0].signal(signal.SIGSTOP)
            time.sleep(4.0)  # lease TTL 2 s: the other relay takes over
            procs[0].signal(signal.SIGCONT)
            time.sleep(1.5)
        wait_until(lambda: _drained(pg_url, redis_client, stream, len(writers.ids)), timeout=30)
        for p in procs:
            p.signal(signal.SIGTERM)
        assert [p.wait(10) for p in procs] == [0, 0]
    assert_complete_and_ordered(redis_entries(redis_client, [stream]), writers.ids)
    events = {e["event"] for e in procs[0].events()}
    assert "relay.rebalanced" in events


def test_relay_sigterm_exits_zero_quickly_and_frees_leases(pg_url: str, redis_url: str, stream_prefix: str,
                                                           tmp_path: Path) -> None:  # fmt: skip
    """SIGTERM while draining a backlog: exit 0 within a few seconds, `relay.stopped` logged, leases released."""
    write_events(pg_url, 5000, per_tx=1000)
    proc = RelayProcess(tmp_path / "r.log", *_args(pg_url, redis_url, stream_prefix, "--batch-size", "100"))
    try:
        wait_until(lambda: any(e["event"] == "relay.batch_published" for e in proc.events()), timeout=20)
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 3
    finally:
        proc.kill()
    assert proc.events()[-1]["event"] == "relay.stopped"
    engine = create_engine(pg_url, poolclass=NullPool)
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM outboxkit_relay_lease WHERE owner IS NOT NULL")).scalar()
            == 0
        )
    engine.dispose()


def test_relay_sqlite_and_sql_table_broker_end_to_end(tmp_path: Path) -> None:
    """The embedded default: SQLite outbox, SQL-table broker in another SQLite file, `relay --once`, `status`."""
    app, broker = f"sqlite:///{tmp_path / 'app.db'}", f"sqlite:///{tmp_path / 'broker.db'}"
    for url in (app, broker):
        assert run_cli("migrate", "--db", url).returncode == 0
    ids = write_events(app, 300, keys=3)
    result = run_cli("relay", "--db", app, "--broker", broker, "--once", "--topic-partitions", "orders=2")
    assert result.returncode == 0, result.stderr
    entries = sql_broker_entries(broker, "orders:0") + sql_broker_entries(broker, "orders:1")
    assert_complete_and_ordered(sorted(entries, key=lambda f: f["id"]), ids)
    status = run_cli("status", "--json", "--broker", broker, OUTBOXKIT_DATABASE_URL=app)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["pending"] == 0
    assert report["broker"]["reachable"] is True
    assert report["kept_published"] == 300  # the default replay window keeps them a minute


def test_relay_status_shows_backlog_and_why(tmp_path: Path) -> None:
    """`status` prints the backlog, delayed rows and dead letters per topic."""
    app = f"sqlite:///{tmp_path / 'app.db'}"
    assert run_cli("migrate", "--db", app).returncode == 0
    write_events(app, 4)
    write_events(app, 2, start=10, delay=__import__("datetime").timedelta(hours=1))
    result = run_cli("status", "--db", app)
    assert result.returncode == 0, result.stderr
    assert "backlog: 6 rows unpublished" in result.stdout
    assert "delayed: 2" in result.stdout
    assert "dead letters: 0" in result.stdout


def test_relay_status_counts_rows_in_backoff_and_behind_a_parked_key(pg_url: str) -> None:
    """`status` on PostgreSQL counts a row in retry backoff and the rows of its key waiting behind it (#9)."""
    write_events(pg_url, 6, keys=2)  # k0: seq 0, 2, 4; k1: seq 1, 3, 5
    engine = create_engine(pg_url, poolclass=NullPool)
    with engine.begin() as conn:  # the relay failed to publish seq 0 and parked it for an hour
        conn.execute(
            text(
                "UPDATE outbox SET attempts = 1, next_attempt_at = now() + interval '1 hour'"
                " WHERE id = (SELECT min(id) FROM outbox)"
            )
        )
    engine.dispose()
    result = run_cli("status", "--db", pg_url)
    assert result.returncode == 0, result.stderr
    assert "backlog: 6 rows unpublished" in result.stdout
    assert "due now: 3; delayed: 0; in retry backoff: 1; waiting behind a parked key: 2" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["relay", "--broker", "redis://localhost:1"], "no db URL"),
        (["relay", "--db", "nosuch://x", "--broker", "redis://localhost:1"], "invalid database URL"),
        (
            ["relay", "--db", "sqlite:///{tmp}/empty.db", "--broker", "ftp://user:pw@h"],
            "unsupported broker URL",
        ),
        (["relay", "--db", "sqlite:///{tmp}/empty.db", "--broker", "memory://"], "is missing"),
        (["status", "--db", "sqlite:///{tmp}/empty.db"], "outboxkit migrate"),
        (["dead-letters", "retry", "--db", "sqlite:///{tmp}/empty.db"], "name the dead letters"),
    ],
)
def test_relay_cli_bad_settings_are_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    """A wrong flag, URL or missing table is one line on stderr and exit status 2, without the password."""
    result = run_cli(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert "pw@" not in lines[0]


def test_relay_metrics_and_healthz(pg_url: str, redis_url: str, stream_prefix: str, tmp_path: Path) -> None:
    """--metrics-port serves Prometheus metrics (published total, backlog) and /healthz."""
    write_events(pg_url, 40)
    port = free_port()
    proc = RelayProcess(tmp_path / "r.log", *_args(pg_url, redis_url, stream_prefix, "--metrics-port", str(port),
                                                   "--metrics-host", "127.0.0.1"))  # fmt: skip
    try:

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                return resp.read().decode()

        def ready() -> bool:
            try:
                return 'outboxkit_relay_published_total{topic="orders"} 40.0' in scrape()
            except OSError:
                return False

        wait_until(ready, timeout=20)
        body = scrape()
        for name in ("outboxkit_relay_backlog_rows", "outboxkit_relay_oldest_age_seconds",
                     "outboxkit_relay_rows_behind_parked_key", "outboxkit_relay_batch_duration_seconds_bucket"):  # fmt: skip
            assert name in body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            assert resp.status == 200
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.slow
def test_relay_memory_stays_bounded_draining_large_payloads(pg_url: str, redis_url: str, stream_prefix: str,
                                                            redis_client: redis.Redis, tmp_path: Path) -> None:  # fmt: skip
    """Draining 4,000 rows of 32 KiB (128 MiB) keeps the relay's RSS flat: sampled, bounded by --max-batch-mib."""
    write_events(pg_url, 4000, size=32 * 1024, per_tx=200)
    # Batches of up to 500 rows, but at most 2 MiB of payload: the relay shrinks its claims.
    proc = RelayProcess(tmp_path / "r.log", *_args(pg_url, redis_url, stream_prefix, "--batch-size", "500",
                                                   "--max-batch-mib", "2", "--replay-window", "0"))  # fmt: skip
    samples: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while outbox_count(pg_url) > 0 and time.monotonic() < deadline:
            samples.append(_rss_kib(proc.proc.pid))
            time.sleep(0.05)
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    assert outbox_count(pg_url, "1=1") == 0
    assert redis_client.xlen(f"{stream_prefix}orders") == 4000
    sizes = [int(e["batch_size"]) for e in proc.events() if e["event"] == "relay.batch_published"]  # type: ignore[call-overload]
    assert max(sizes[1:]) <= 64  # 2 MiB / 32 KiB after the first batch
    peak_mib = max(samples) / 1024
    settled = samples[len(samples) // 4 :]
    assert peak_mib < 200, f"peak RSS {peak_mib:.0f} MiB"
    assert max(settled) - min(settled) < 64 * 1024, "RSS grows with the backlog"
    print(f"peak RSS {peak_mib:.0f} MiB over {len(samples)} samples")


def test_relay_sqlite_broker_in_the_same_file(tmp_path: Path) -> None:
    """Outbox and SQL-table broker in one SQLite file: the relay does not deadlock on its own locks."""
    url = f"sqlite:///{tmp_path / 'one.db'}"
    assert run_cli("migrate", "--db", url).returncode == 0
    ids = write_events(url, 120)
    result = run_cli("relay", "--db", url, "--broker", url, "--once", "--replay-window", "0", timeout=60)
    assert result.returncode == 0, result.stderr
    assert_complete_and_ordered(sql_broker_entries(url, "orders"), ids)
    assert outbox_count(url, "1=1") == 0


def test_relay_two_processes_starting_together_share_the_work(pg_url: str, redis_url: str, stream_prefix: str,
                                                              redis_client: redis.Redis, tmp_path: Path) -> None:  # fmt: skip
    """Two relays started at the same instant on a fresh database both come up and drain it exactly in key order."""
    ids = write_events(pg_url, 2000, keys=50, per_tx=500)
    stream = f"{stream_prefix}orders"
    with relays(
        tmp_path, 2, *_args(pg_url, redis_url, stream_prefix, "--batch-size", "50", "--once")
    ) as procs:
        assert [p.wait(60) for p in procs] == [0, 0]
    assert_complete_and_ordered(redis_entries(redis_client, [stream]), ids)


@pytest.mark.parametrize("point", ["relay.after_claim", "relay.after_publish", "relay.after_mark"])
def test_relay_crash_at_each_instant_loses_nothing(point: str, pg_url: str, redis_url: str, stream_prefix: str,
                                                   redis_client: redis.Redis, tmp_path: Path) -> None:  # fmt: skip
    """SIGKILL at a named crash point (after claim / after publish / before commit): a restart relays everything, in order."""
    ids = write_events(pg_url, 300, keys=7)
    stream = f"{stream_prefix}orders"
    args = _args(pg_url, redis_url, stream_prefix, "--batch-size", "64", "--once")
    crashed = subprocess.run(
        [sys.executable, "-m", "outboxkit", "relay", *args],
        env=cli_env(OUTBOXKIT_CRASH_AT=point, OUTBOXKIT_CRASH_SKIP="1"),
        cwd=REPO_ROOT, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL
    published_before = redis_client.xlen(stream) if redis_client.exists(stream) else 0
    assert published_before == (128 if point != "relay.after_claim" else 64)
    time.sleep(2.1)  # the dead relay's leases expire (--lease-ttl 2)
    result = run_cli("relay", *args)
    assert result.returncode == 0, result.stderr
    entries = redis_entries(redis_client, [stream])
    assert_complete_and_ordered(entries, ids)
    duplicates = len(entries) - len(ids)
    assert duplicates == (64 if point != "relay.after_claim" else 0)  # the unmarked batch, published again
