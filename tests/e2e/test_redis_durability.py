"""``--broker-durability`` on one Redis: WAIT for a replica before rows are marked, and what a shortfall does (#11)."""

from __future__ import annotations

import datetime as dt

import pytest
import redis

from brokers import StreamLayout
from outbox import BrokerError
from relay import Relay, RelayConfig
from tests._cli import run_cli
from tests._relay_support import outbox_count, wait_until, write_events
from tests._servers import RedisServer

pytestmark = pytest.mark.e2e
WAITAOF_VERSION = (7, 2)


def _config(db: str, broker: str, prefix: str, **kw: object) -> RelayConfig:
    values: dict[str, object] = {
        "database_url": db,
        "broker_url": broker,
        "layout": StreamLayout(prefix=prefix),
        "poll_interval": dt.timedelta(seconds=0.05),
        "once": True,
    }
    return RelayConfig(**{**values, **kw})  # type: ignore[arg-type]


def test_durability_replicas_1_marks_rows_once_the_replica_has_them(
    sqlite_url: str, redis_server_factory: object, stream_prefix: str
) -> None:
    """With a live replica, replicas=1 relays everything, and the replica holds every entry the relay marked."""
    assert callable(redis_server_factory)
    master: RedisServer = redis_server_factory(extra_args=["--repl-diskless-sync-delay", "0"])
    replica: RedisServer = redis_server_factory(extra_args=["--replicaof", "127.0.0.1", str(master.port)])
    with redis.Redis.from_url(replica.url) as client:
        wait_until(lambda: client.info("replication")["master_link_status"] == "up", timeout=20)
    write_events(sqlite_url, 50)
    stats = Relay(_config(sqlite_url, master.url, stream_prefix, broker_durability="replicas=1")).run()
    assert stats.published == 50
    assert outbox_count(sqlite_url) == 0
    with redis.Redis.from_url(replica.url) as client:
        assert client.xlen(f"{stream_prefix}orders") == 50  # WAIT returned: no need to poll


def test_durability_shortfall_fails_the_batch_and_keeps_the_rows(
    sqlite_url: str, redis_url: str, stream_prefix: str
) -> None:
    """No replica acknowledges: every batch fails like an outage, nothing is marked, --once gives up with the reason."""
    write_events(sqlite_url, 10)
    broker = f"{redis_url}?durability=replicas=1&durability_timeout=0.05"
    with pytest.raises(BrokerError, match=r"0 of 1 replicas acknowledged within 0\.05s"):
        Relay(_config(sqlite_url, broker, stream_prefix)).run()
    assert outbox_count(sqlite_url) == 10  # kept: published again once a replica acknowledges


def test_durability_aof_needs_waitaof_or_is_one_line_exit_2(
    sqlite_url: str, redis_url: str, stream_prefix: str
) -> None:
    """aof uses WAITAOF (Redis >= 7.2); on an older server the relay stops with one line and exit 2."""
    write_events(sqlite_url, 3)
    with redis.Redis.from_url(redis_url) as client:
        version = tuple(int(p) for p in str(client.info("server")["redis_version"]).split(".")[:2])
    result = run_cli("relay", "--db", sqlite_url, "--broker", redis_url, "--stream-prefix", stream_prefix,
                     "--broker-durability", "aof", "--once")  # fmt: skip
    if version >= WAITAOF_VERSION:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("outboxkit: error:")]
    assert len(lines) == 1, result.stderr
    assert "needs Redis >= 7.2 (WAITAOF)" in lines[0]
    assert "Traceback" not in result.stderr
    assert outbox_count(sqlite_url) == 3
