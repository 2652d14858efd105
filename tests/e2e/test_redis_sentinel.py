"""Relay and consumers through Redis Sentinel (master, replica, 3 sentinels on loopback), as real processes.

The default suite runs one relay-and-consume pass (~10 s); the failover run (the
master SIGKILLed under load, ~40 s) runs only with
``OUTBOXKIT_TEST_REDIS_FAILOVER=1`` (docs/testing.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests._broker_runs import (
    assert_effects_once_in_key_order,
    consume_args,
    create_domain,
    relay_args,
    run_and_kill_under_load,
    write,
)
from tests._cli import run_cli
from tests._redis_sentinel import RedisSentinelSetup
from tests._relay_support import outbox_count

pytestmark = pytest.mark.e2e

FAILOVER_ENV = "OUTBOXKIT_TEST_REDIS_FAILOVER"


@pytest.fixture
def app_db(pg_url: str) -> str:
    return create_domain(pg_url)


def test_relay_and_consumer_through_sentinel_with_replicas_1(
    app_db: str, redis_sentinel: RedisSentinelSetup, stream_prefix: str
) -> None:
    """`relay --once --broker-durability replicas=1` and `consume --once` on redis+sentinel:// apply every event once."""
    write(app_db, 0, 60)
    relayed = run_cli(*relay_args(app_db, redis_sentinel.url, stream_prefix, "--broker-durability", "replicas=1",
                                  "--once"))  # fmt: skip
    assert relayed.returncode == 0, relayed.stderr[-2000:]
    assert outbox_count(app_db) == 0
    consumed = run_cli(*consume_args(app_db, redis_sentinel.url, stream_prefix, "--once"))
    assert consumed.returncode == 0, consumed.stderr[-2000:]
    assert_effects_once_in_key_order(app_db, 60)


@pytest.mark.skipif(not os.environ.get(FAILOVER_ENV), reason=f"long failover run: set {FAILOVER_ENV}=1")
def test_sentinel_master_sigkilled_under_load_is_replaced_and_nothing_is_lost(
    app_db: str, stream_prefix: str, tmp_path: Path
) -> None:
    """SIGKILL the master while relay and consumer run (durability replicas=1): the sentinels promote the replica; 0 lost, 0 doubled, 0 reordered."""
    with RedisSentinelSetup() as setup:

        def kill() -> None:
            dead = setup.master_port()
            assert dead is not None
            setup.server_on(dead).kill()
            setup.wait_failover(dead, timeout=30)
            # replicas=1 waits for a replica the promoted master does not have yet: the
            # sentinels make the restarted old master its replica.
            setup.server_on(dead).start()

        run_and_kill_under_load(app_db, setup.url, stream_prefix, tmp_path, kill)
