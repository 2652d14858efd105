"""Relay and consumers on a real Redis Cluster (3 masters, 3 replicas on loopback), as real processes.

The default suite runs one relay-and-consume test on the session's cluster
(~15 s). The failover run (a master SIGKILLed under load, ~40 s) starts a
private cluster and runs only with ``OUTBOXKIT_TEST_REDIS_FAILOVER=1``
(docs/testing.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from brokers.redis_cluster import RedisClusterPublisher
from outbox import BrokerAuthError
from tests._broker_runs import (
    PARTITIONS,
    TOPIC,
    assert_effects_once_in_key_order,
    consume_args,
    create_domain,
    relay_args,
    run_and_kill_under_load,
    write,
)
from tests._cli import REPO_ROOT, run_cli
from tests._redis_cluster import RedisClusterServer
from tests._relay_support import outbox_count

pytestmark = pytest.mark.e2e

FAILOVER_ENV = "OUTBOXKIT_TEST_REDIS_FAILOVER"


@pytest.fixture
def app_db(pg_url: str) -> str:
    return create_domain(pg_url)


def test_relay_and_consumer_under_the_documented_acl_spread_partitions_over_every_master(
    app_db: str, redis_cluster: RedisClusterServer
) -> None:
    """Under the cluster users of docs/security.md (made on every node), `relay --once` writes one stream per partition, on all 3 masters; `consume --once` applies each event once, in key order; no secret leaks."""
    docs = (REPO_ROOT / "docs" / "security.md").read_text()
    block = re.search(r"<!-- acl:redis-cluster -->\n```\n(.*?)```", docs, re.DOTALL)
    assert block
    for node in redis_cluster.nodes:  # ACL users are per node: a replica may become master
        with redis_cluster.node_client(node.port) as client:
            for line in block.group(1).strip().splitlines():
                client.execute_command(*line.split())
    seeds, prefix = redis_cluster.seeds, "orders:"  # the prefix the documented ACL allows
    write(app_db, 0, 240)
    relayed = run_cli(*relay_args(app_db, f"redis+cluster://relay:relay-secret@{seeds}", prefix, "--once"))
    assert relayed.returncode == 0, relayed.stderr[-2000:]
    assert outbox_count(app_db) == 0
    client = redis_cluster.client()
    try:
        streams = [f"{prefix}{{{TOPIC}:{p}}}" for p in range(PARTITIONS)]
        owners = {client.get_node_from_key(s).port for s in streams}
        assert owners == set(redis_cluster.master_ports()), "partitions must spread over every master"
        assert sum(int(client.xlen(s)) for s in streams) == 240
    finally:
        client.close()
    consumer_url = f"redis+cluster://consumer:consumer-secret@{seeds}"
    consumed = run_cli(*consume_args(app_db, consumer_url, prefix, "--once"))
    assert consumed.returncode == 0, consumed.stderr[-2000:]
    assert_effects_once_in_key_order(app_db, 240)
    # The users may write only ~orders:* (a key outside it would have failed the run with NOPERM);
    # the consumer group exists on every partition's stream, on its master.
    with redis_cluster.client() as admin:
        for stream in streams:
            assert [g["name"] for g in admin.xinfo_groups(stream)] == [b"billing"]
    assert "secret" not in relayed.stderr + consumed.stderr
    wrong = RedisClusterPublisher(f"redis+cluster://relay:wrong-secret@{seeds}")
    with pytest.raises(BrokerAuthError) as refused:
        wrong.ping()
    wrong.close()
    assert "secret" not in str(refused.value)
    assert refused.value.__cause__ is None  # no redis-py exception carrying the URL along


@pytest.mark.parametrize(
    ("broker", "says"),
    [
        ("redis+cluster://relay:Secr3t-pw@127.0.0.1:1,127.0.0.1:2", "no Redis Cluster node answered"),
    ],
)
def test_bad_or_unreachable_cluster_urls_are_one_line_exit_2(sqlite_url: str, broker: str, says: str) -> None:
    """Seeds nobody answers on are one stderr line and exit 2; the password never shows (malformed URLs: unit tests)."""
    result = run_cli("relay", "--db", sqlite_url, "--broker", broker, "--once")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("outboxkit: error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    assert says in lines[0]
    assert "Secr3t" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not os.environ.get(FAILOVER_ENV), reason=f"long failover run: set {FAILOVER_ENV}=1")
def test_master_sigkilled_under_load_is_replaced_and_nothing_is_lost(
    app_db: str, stream_prefix: str, tmp_path: Path
) -> None:
    """SIGKILL a master while relay and consumer run (durability replicas=1): 0 lost, 0 doubled, 0 reordered."""
    with RedisClusterServer() as cluster:

        def kill() -> None:
            victim = cluster.master_ports()[0]
            cluster.node_by_port(victim).kill()
            cluster.wait_failover(victim, timeout=30)
            # With replicas=1 the promoted master, having no replica yet, fails every WAIT:
            # its partitions wait (retried) until the old master rejoins as its replica.
            cluster.node_by_port(victim).start()
            cluster.wait_healthy(timeout=30)

        events = run_and_kill_under_load(app_db, cluster.url, stream_prefix, tmp_path, kill)
    unsettled = [e for e in events if e.get("event") == "broker.cluster_unsettled"]
    assert len(unsettled) <= 2, "one warning per outage, not one per retry"
