"""Health probes and gauge values of running daemons, read through a real HTTP scrape (#13).

Each test starts a real ``outboxkit`` process with ``--metrics-port``, puts the
database and the broker in a known state, and asserts the values Prometheus
would read, not only the metric names.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, insert, text
from sqlalchemy.pool import NullPool

import inbox
import outbox
import saga
from tests._cli import REPO_ROOT, cli_env
from tests._inbox import domain, entry
from tests._relay_support import wait_until, write_events
from tests._servers import free_port

pytestmark = pytest.mark.e2e

_SAMPLE = re.compile(r"^(?P<name>[a-z_:]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` parsed into {(name, labels): value}; empty while the server is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            body = resp.read().decode()
    except OSError:
        return {}
    samples = {}
    for line in body.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        samples[match["name"], labels] = float(match["value"])
    return samples


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def probe(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, **env: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"d{len(started)}.log").open("wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "outboxkit", "--log-format", "json", *args],
                cwd=REPO_ROOT, env=cli_env(**env), stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _hold_rows_back(url: str) -> None:
    """1 row in retry backoff with 2 rows of its key behind it, 2 delayed rows, 2 dead letters of `payments`."""
    # Delayed rows first: a later row of key k0 would also count as waiting behind k0.
    write_events(url, 2, topic="later", delay=dt.timedelta(hours=1))
    write_events(url, 3, keys=1, topic="held")  # key k0: the first goes in backoff, the two others wait
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        first = conn.execute(text("SELECT min(id) FROM outbox WHERE topic = 'held'")).scalar_one()
        conn.execute(
            text(
                "UPDATE outbox SET attempts = 1, next_attempt_at = now() + interval '1 hour' WHERE id = :id"
            ),
            {"id": first},
        )
        for n in range(2):
            conn.execute(
                text(
                    "INSERT INTO outbox_dead_letter (id, message_id, topic, key, key_hash, type, source, headers,"
                    " payload, created_at, available_at, attempts, last_error, dead_lettered_at)"
                    " VALUES (:id, :m, 'payments', :k, 0, 't', 's', '{}', '{}', now(), now(), 3, 'rejected', now())"
                ),
                {"id": 100000 + n, "m": str(uuid.uuid4()), "k": f"p{n}"},
            )
    engine.dispose()


def test_relay_gauges_and_probes_on_a_scrape(
    daemon: Callable[..., subprocess.Popen[bytes]], pg_url: str, redis_url: str, stream_prefix: str
) -> None:
    """Backlog, rows held back by reason, open transactions, dead letters by topic, publish latency; probes."""
    write_events(pg_url, 10)
    _hold_rows_back(pg_url)
    engine = create_engine(pg_url, poolclass=NullPool)
    open_tx = engine.connect()
    open_tx.begin()  # a transaction that stays open: its row is invisible, the transaction is counted
    outbox.publish(open_tx, "orders", {"late": True}, key="late")
    port = free_port()
    proc = daemon("relay", "--db", pg_url, "--broker", redis_url, "--stream-prefix", stream_prefix,
                  "--metrics-port", str(port), "--on-dead-letter", "skip")  # fmt: skip
    try:

        def settled() -> bool:
            s = scrape(port)
            return (
                value(s, "outboxkit_relay_published_total", topic="orders") == 10
                and value(s, "outboxkit_relay_backlog_rows") == 5
                and value(s, "outboxkit_relay_open_transactions") == 1
            )

        wait_until(settled, timeout=40)
        s = scrape(port)
        assert value(s, "outboxkit_relay_held_rows", reason="backoff") == 1
        assert value(s, "outboxkit_relay_held_rows", reason="parked_key") == 2
        assert value(s, "outboxkit_relay_held_rows", reason="delayed") == 2
        assert (value(s, "outboxkit_relay_oldest_open_transaction_seconds") or 0) >= 5
        assert value(s, "outboxkit_relay_dead_letter_rows", topic="payments") == 2
        assert value(s, "outboxkit_relay_oldest_due_age_seconds") == 0  # nothing claimable is waiting
        assert (value(s, "outboxkit_relay_oldest_age_seconds") or 0) > 0
        assert value(s, "outboxkit_relay_publish_latency_seconds_count", topic="orders") == 10
        assert value(s, "outboxkit_relay_owned_partitions") == 16
        assert value(s, "outboxkit_daemon_ready", daemon="relay") == 1
        assert probe(port, "/healthz") == 200
        assert probe(port, "/readyz") == 200
        assert probe(port, "/nope") == 404
    finally:
        open_tx.rollback()
        open_tx.close()
        engine.dispose()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


def test_relay_oldest_due_age_grows_while_the_broker_is_down(
    daemon: Callable[..., subprocess.Popen[bytes]], pg_url: str
) -> None:
    """The gauge an alert pages on keeps moving during a broker outage (it froze before #13)."""
    write_events(pg_url, 3)
    port = free_port()
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    daemon("relay", "--db", pg_url, "--broker", dead_broker, "--metrics-port", str(port))
    s: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

    def due_age_reported() -> bool:
        nonlocal s
        s = scrape(port)
        # The due age stayed 0 during an outage before #13.
        due_age = value(s, "outboxkit_relay_oldest_due_age_seconds") or 0
        return due_age > 0 and (value(s, "outboxkit_relay_failures_total", reason="broker") or 0) >= 1

    wait_until(due_age_reported, timeout=20)
    assert value(s, "outboxkit_relay_backlog_rows") == 3
    assert probe(port, "/healthz") == 200  # alive: restarting it would not bring the broker back


def _seed_consumer_state(url: str) -> None:
    """2 dead letters, 1 parked entry behind them (key k) of group `billing`; sagas: 2 running (1 stuck, past
    its deadline), 1 completed."""
    engine = create_engine(url, poolclass=NullPool)
    domain.create_all(engine)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        for n, error in enumerate(["boom", "boom", inbox.PARKED_ERROR]):
            conn.execute(
                text(
                    "INSERT INTO outboxkit_inbox_dead_letter (consumer, stream, entry_id, topic, key, fields, error,"
                    " deliveries, dead_lettered_at) VALUES ('billing', 's', :e, 'orders.created', 'k', '{}', :err,"
                    " 5, now())"
                ),
                {"e": f"1-{n}", "err": error},
            )
        ids = []
        for state, age in [("running", dt.timedelta(hours=2)), ("running", dt.timedelta(0)), ("completed", dt.timedelta(0))]:  # fmt: skip
            ids.append(uuid.uuid4())
            conn.execute(
                insert(saga.tables.saga_instance).values(
                    id=ids[-1], type="order", state=state, step=0, attempt=1, data="{}", version=1,
                    correlation_id="c", created_at=now - age, updated_at=now - age,
                )
            )  # fmt: skip
        # The stuck saga's overall deadline passed an hour ago and its timer never arrived.
        conn.execute(insert(saga.tables.saga_timer).values(
            saga_id=ids[0], name=saga.DEADLINE_TIMER, message_id=uuid.uuid4(), step=0, attempt=1,
            fires_at=now - dt.timedelta(hours=1), created_at=now - dt.timedelta(hours=2),
        ))  # fmt: skip
    engine.dispose()


def test_consumer_gauges_and_probes_on_a_scrape(
    daemon: Callable[..., subprocess.Popen[bytes]],
    pg_url: str,
    redis_url: str,
    redis_client: redis.Redis,
    stream_prefix: str,
    tmp_path: Path,
) -> None:
    """Lag and pending per group and stream, handle latency, dead letters by topic, sagas: exact values."""
    _seed_consumer_state(pg_url)
    stream = f"{stream_prefix}orders.created"
    for n in range(10):
        redis_client.xadd(stream, entry(payload={"n": n}))
    port = free_port()
    proc = daemon(
        "consume", "tests.e2e.inbox_app:registry", "--db", pg_url, "--broker", redis_url, "--group", "billing",
        "--stream-prefix", stream_prefix, "--batch-size", "1", "--block", "0.2", "--retention", "0",
        "--lease-ttl", "2", "--metrics-port", str(port),
        INBOX_E2E_HANG_ON="3", INBOX_E2E_MARKER=str(tmp_path / "hung"),
    )  # fmt: skip
    wait_until((tmp_path / "hung").exists, timeout=30)  # 0, 1, 2 handled; 3 hangs
    wait_until(
        lambda: value(scrape(port), "outboxkit_inbox_lag", consumer="billing", stream=stream) == 7, timeout=20
    )
    s = scrape(port)
    assert value(s, "outboxkit_inbox_pending", consumer="billing", stream=stream) == 1
    assert value(s, "outboxkit_inbox_handler_seconds_count", consumer="billing", topic="orders.created") == 3
    assert value(s, "outboxkit_inbox_dead_letter_rows", consumer="billing", topic="orders.created") == 2
    assert value(s, "outboxkit_inbox_parked_rows", consumer="billing") == 1
    assert value(s, "outboxkit_saga_instances", type="order", state="running") == 2
    assert value(s, "outboxkit_saga_instances", type="order", state="completed") == 1
    assert value(s, "outboxkit_saga_stuck", type="order") == 1
    assert value(s, "outboxkit_saga_deadline_missed", type="order") == 1
    assert (value(s, "outboxkit_saga_oldest_open_age_seconds", type="order") or 0) >= 7000
    assert value(s, "outboxkit_daemon_ready", daemon="consumer") == 1
    assert probe(port, "/healthz") == 200
    assert probe(port, "/readyz") == 200
    proc.kill()


def test_consumer_without_its_broker_is_alive_but_not_ready(
    daemon: Callable[..., subprocess.Popen[bytes]], pg_url: str
) -> None:
    """/healthz stays 200 (a restart would not help), /readyz answers 503 until leases are held."""
    port = free_port()
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    daemon("consume", "tests.e2e.inbox_app:registry", "--db", pg_url, "--broker", dead_broker,
           "--group", "billing", "--metrics-port", str(port))  # fmt: skip
    wait_until(lambda: probe(port, "/healthz") == 200, timeout=20)
    assert probe(port, "/readyz") == 503
    assert value(scrape(port), "outboxkit_daemon_ready", daemon="consumer") == 0
