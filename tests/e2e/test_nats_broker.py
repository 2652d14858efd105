"""NATS JetStream end to end: real relay and consumer processes under the documented least privilege (#11).

The relay runs as the ``relay`` user and the consumers as the ``consumer`` user
of tests/_nats.py, whose permissions are the ones docs/brokers.md documents;
``admin`` only reads the streams to check them. The stream-leader failover
test runs on a private cluster it kills a node of; ``OUTBOXKIT_NATS_LONG=1``
makes it longer (more load, every node killed in turn), see docs/testing.md.
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, select

from tests._cli import run_cli
from tests._inbox import count_effects, domain, effect, entry
from tests._nats import (
    ADMIN,
    CONSUMER_USER,
    RELAY_USER,
    NatsCluster,
    group_settled,
    nats_add,
    nats_entries,
    nats_streams,
    stream_leader,
)
from tests._relay_support import assert_complete_and_ordered, outbox_count, wait_until
from tests._servers import LOCALHOST, free_port
from tests.e2e.test_consume_crash import Consumer
from tests.e2e.test_relay_processes import RelayProcess, Writers, _args

pytestmark = pytest.mark.e2e
USAGE = 2
LONG = os.environ.get("OUTBOXKIT_NATS_LONG") == "1"
SECRETS = (RELAY_USER[1], CONSUMER_USER[1], ADMIN[1])


@pytest.fixture
def app_db(pg_url: str) -> str:
    engine = create_engine(pg_url)
    domain.create_all(engine)
    engine.dispose()
    return pg_url


def _consumer_args(db: str, broker: str, prefix: str) -> list[str]:
    return ["--db", db, "--broker", broker, "--group", "billing", "--stream-prefix", prefix,
            "--lease-ttl", "1", "--claim-idle", "1", "--block", "0.2", "--retry-delay", "0.01",
            "--retention", "0", "--shutdown-timeout", "5"]  # fmt: skip


@pytest.fixture
def consumers(tmp_path: pathlib.Path) -> Iterator[Callable[..., Consumer]]:
    started: list[Consumer] = []

    def start(name: str, args: list[str], **env: str) -> Consumer:
        consumer = Consumer(tmp_path, name, args, env)
        started.append(consumer)
        return consumer

    yield start
    for consumer in started:
        consumer.close()


def _no_secret_in(*paths: pathlib.Path) -> None:
    for path in paths:
        text = path.read_text(errors="replace")
        for secret in SECRETS:
            assert secret not in text, f"a password is in {path.name}"


# -- relay ---------------------------------------------------------------------------


@pytest.mark.slow
def test_nats_relay_sigkilled_repeatedly_loses_nothing_and_keeps_order(
    pg_url: str, nats_cluster: NatsCluster, stream_prefix: str, tmp_path: pathlib.Path
) -> None:
    """SIGKILL the relay (least-privilege user) again and again under writers: all events, per-key order."""
    rng = random.Random(11)
    stream = f"{stream_prefix}orders"
    args = _args(pg_url, nats_cluster.url(RELAY_USER), stream_prefix, "--batch-size", "50")
    logs = []
    with Writers(pg_url, threads=1) as writers:
        for i in range(2):
            logs.append(tmp_path / f"r{i}.log")
            proc = RelayProcess(logs[-1], *args)
            time.sleep(rng.uniform(1.5, 3.0))
            proc.kill()
    logs.append(tmp_path / "final.log")
    final = RelayProcess(logs[-1], *args)
    try:
        wait_until(lambda: outbox_count(pg_url) == 0, timeout=60)
        final.signal(signal.SIGTERM)
        assert final.wait(15) == 0
    finally:
        final.kill()
    entries = nats_entries(nats_cluster.url(), stream)
    assert len(writers.ids) > 100
    assert_complete_and_ordered(entries, writers.ids)
    _no_secret_in(*logs)


# -- consumer -------------------------------------------------------------------------


@pytest.mark.slow
def test_nats_consumer_killed_after_commit_before_ack_skips_the_duplicate(
    app_db: str, nats_cluster: NatsCluster, stream_prefix: str, consumers: Callable[..., Consumer]
) -> None:
    """SIGKILL between the inbox commit and the ack: the next consumer gets it again and skips it."""
    stream = f"{stream_prefix}orders.created"
    first, second = entry(payload={"n": 1}), entry(payload={"n": 2})
    nats_add(nats_cluster.url(), stream, first)
    nats_add(nats_cluster.url(), stream, second)
    args = _consumer_args(app_db, nats_cluster.url(CONSUMER_USER), stream_prefix)
    a = consumers("a", args, INBOX_E2E_KILL_AFTER_COMMIT="1")
    assert a.wait() == -signal.SIGKILL
    assert count_effects(app_db) == 1
    b = consumers("b", args)
    wait_until(lambda: group_settled(nats_cluster.url(), stream, "billing"), timeout=30)
    b.proc.send_signal(signal.SIGTERM)
    assert b.wait() == 0
    assert count_effects(app_db) == 2
    skipped = [e for e in b.events() if e.get("event") == "inbox.duplicate_skipped"]
    assert [(e["message_id"], e["attempt"]) for e in skipped] == [(first["id"], 2)]
    assert any(e.get("event") == "nats.group_reset" for e in b.events())  # the takeover
    _no_secret_in(a.log_path, b.log_path)
    # `status` shows the group's lag as for Redis, under the consumer's own user, no password.
    status = run_cli("status", "--db", app_db, "--broker", nats_cluster.url(CONSUMER_USER),
                     "--stream-prefix", stream_prefix)  # fmt: skip
    assert status.returncode == 0, status.stderr[-2000:]
    assert f"{stream} / billing: lag 0 (pending 0, behind 0)" in status.stdout
    assert CONSUMER_USER[1] not in status.stdout + status.stderr


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="long variant: OUTBOXKIT_NATS_LONG=1 (docs/testing.md)")
def test_nats_consumer_killed_mid_handler_is_taken_over_by_the_standby(
    app_db: str,
    nats_cluster: NatsCluster,
    stream_prefix: str,
    consumers: Callable[..., Consumer],
    tmp_path: pathlib.Path,
) -> None:
    """SIGKILL inside a handler: the standby takes the partition over; every effect exactly once, in order."""
    stream = f"{stream_prefix}orders.created"
    for n in range(1, 6):
        nats_add(nats_cluster.url(), stream, entry(payload={"n": n}, key="k"))
    marker = tmp_path / "in-handler"
    args = _consumer_args(app_db, nats_cluster.url(CONSUMER_USER), stream_prefix)
    a = consumers("a", args, INBOX_E2E_HANG_ON="3", INBOX_E2E_MARKER=str(marker))
    wait_until(marker.exists, timeout=30)
    b = consumers("b", args)  # a standby: the lease is a's
    time.sleep(0.5)
    a.proc.kill()
    assert a.wait() == -signal.SIGKILL
    wait_until(lambda: group_settled(nats_cluster.url(), stream, "billing"), timeout=30)
    b.proc.send_signal(signal.SIGTERM)
    assert b.wait() == 0
    assert _effects(app_db) == [("k", n) for n in range(1, 6)]


def _effects(url: str) -> list[tuple[str | None, int | None]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(effect.c.key, effect.c.n).order_by(effect.c.id)).all()
            return [(r.key, r.n) for r in rows]
    finally:
        engine.dispose()


# -- a stream leader SIGKILLed under load ---------------------------------------------------


@pytest.mark.slow
def test_nats_stream_leader_sigkilled_under_load_loses_nothing_doubles_nothing_reorders_nothing(
    app_db: str,
    nats_cluster_factory: Callable[..., NatsCluster],
    stream_prefix: str,
    consumers: Callable[..., Consumer],
    tmp_path: pathlib.Path,
) -> None:
    """Writers, a relay and two consumers run while the stream's JetStream leader is SIGKILLed (#11).

    0 lost (every event has its effect), 0 doubled (one effect per event),
    0 reordered (per key, effects in write order).
    """
    cluster = nats_cluster_factory()
    stream = f"{stream_prefix}orders.created"
    relay_args = _args(app_db, cluster.url(RELAY_USER), stream_prefix, "--batch-size", "50")
    # ack_wait=5: an acknowledgement lost in the failover comes back in seconds, not a minute.
    consumer_args = _consumer_args(app_db, cluster.url(CONSUMER_USER) + "?ack_wait=5", stream_prefix)
    relay = RelayProcess(tmp_path / "relay.log", *relay_args)
    try:
        for name in ("a", "b"):  # batch mode: one transaction per batch keeps up with the writers
            consumers(name, ["--mode", "batch", *consumer_args])
        kills = 3 if LONG else 1
        # pause=0.03: a few hundred events are enough to straddle the failover and
        # keep the drain after it short on a loaded machine.
        with Writers(app_db, threads=1, topic="orders.created", field="n", pause=0.03) as writers:
            wait_until(lambda: count_effects(app_db) > 20, timeout=60)
            for _ in range(kills):
                leader = stream_leader(cluster.url(), stream)
                node = next(n for n in cluster.nodes if n.server_name == leader)
                node.kill()
                # Under load until another node leads the stream and effects flow
                # through it: conditions, not a fixed sleep.
                before = count_effects(app_db)
                wait_until(lambda old=leader: _led_by_another(cluster.url(), stream, old), timeout=30)
                wait_until(lambda floor=before: count_effects(app_db) > floor + 20, timeout=60)
                if LONG:  # the node comes back and catches up; the next kill may hit any node
                    node.start()
                    time.sleep(3)
        wait_until(lambda: count_effects(app_db) >= len(writers.ids), timeout=120)
        wait_until(lambda: group_settled(cluster.url(), stream, "billing"), timeout=60)
    finally:
        relay.kill()
    rows = _effect_rows(app_db)
    ids = [message_id for message_id, _, _ in rows]
    assert len(writers.ids) > 50
    assert set(ids) == set(writers.ids), "lost"
    assert len(ids) == len(set(ids)), "doubled"
    last: dict[str | None, int] = {}
    for _, key, n in rows:
        assert n is not None
        assert n > last.get(key, -1), f"reordered: {key} {n} after {last.get(key)}"
        last[key] = n


def _led_by_another(url: str, stream: str, old: str | None) -> bool:
    """Whether a node other than ``old`` leads ``stream`` (False while the election runs)."""
    try:
        leader = stream_leader(url, stream)
    except Exception:
        return False
    return leader is not None and leader != old


def _effect_rows(url: str) -> list[tuple[str, str | None, int | None]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = select(effect.c.message_id, effect.c.key, effect.c.n).order_by(effect.c.id)
            return [(r.message_id, r.key, r.n) for r in conn.execute(query).all()]
    finally:
        engine.dispose()


# -- bad input and credentials ---------------------------------------------------------------


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == USAGE, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("outboxkit: error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[0]


def test_nats_command_line_refusals_are_one_line_exit_2_without_passwords(
    sqlite_url: str, nats_cluster: NatsCluster
) -> None:
    """A refused password and a missing permission: one stderr line, exit 2, no password (#11)."""
    port = nats_cluster.nodes[0].port
    wrong = f"nats://relay:{CONSUMER_USER[1]}@{LOCALHOST}:{port}"  # a real password, of another user
    relayed = run_cli("relay", "--db", sqlite_url, "--broker", wrong, "--once")
    line = _one_error_line(relayed)
    assert "the credentials were refused" in line, line
    assert not any(secret in relayed.stderr + relayed.stdout for secret in SECRETS)
    # The relay's user may not create consumers: the permission is named, not retried for ever.
    relay_as_consumer = run_cli(
        "consume", "tests.e2e.inbox_app:registry", "--db", sqlite_url, "--group", "g", "--once",
        "--broker", f"nats://relay:{RELAY_USER[1]}@{LOCALHOST}:{port}",
    )  # fmt: skip
    line = _one_error_line(relay_as_consumer)
    assert "a permission is missing" in line, line
    assert not any(secret in relay_as_consumer.stderr + relay_as_consumer.stdout for secret in SECRETS)


@pytest.mark.skipif(not LONG, reason="long variant: OUTBOXKIT_NATS_LONG=1 (docs/testing.md)")
@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("nats://x:1:2", "bad host"),
        (f"nats://relay:{{pw}}@{LOCALHOST}:4222?replica=3", "unknown option 'replica'"),
        ("dead", "unavailable during the connection"),
    ],
)
def test_nats_command_line_bad_urls_are_one_line_exit_2(
    sqlite_url: str, nats_cluster: NatsCluster, url: str, needle: str
) -> None:
    """Malformed URL, unknown option, unreachable seeds: one line and exit 2 from relay and status (#11)."""
    if url == "dead":
        url = f"nats://relay:{{pw}}@{LOCALHOST}:{free_port()},{LOCALHOST}:{free_port()}"
    url = url.replace("{pw}", RELAY_USER[1])  # not in the test id
    for args in (["relay", "--db", sqlite_url, "--broker", url, "--once"],
                 ["consume", "tests.e2e.inbox_app:registry", "--db", sqlite_url, "--group", "g", "--once",
                  "--broker", url]):  # fmt: skip
        result = run_cli(*args)
        line = _one_error_line(result)
        assert needle in line, line
        assert RELAY_USER[1] not in result.stderr + result.stdout


# -- the demo ----------------------------------------------------------------------------


@pytest.mark.skipif(not LONG, reason="long variant: OUTBOXKIT_NATS_LONG=1 (docs/testing.md)")
def test_nats_demo_runs_consistent_and_cleans_its_streams(nats_cluster: NatsCluster) -> None:
    """`outboxkit demo --broker nats://...` ends all consistent and deletes the streams it made."""
    result = run_cli("demo", "--broker", nats_cluster.url(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All consistent" in result.stdout
    assert ADMIN[1] not in result.stdout + result.stderr
    leftover = nats_streams(nats_cluster.url(), "demo-")
    assert leftover == {}
