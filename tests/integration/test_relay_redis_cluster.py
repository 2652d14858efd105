"""The relay on a real Redis Cluster: one master losing its data is noticed for that master (#11)."""

from __future__ import annotations

import datetime as dt

from structlog.testing import capture_logs

from outbox.brokers import StreamLayout
from relay import RelayConfig
from tests._redis_cluster import RedisClusterServer
from tests._relay_support import (
    assert_complete_and_ordered,
    redis_entries,
    relay_thread,
    wait_until,
    write_events,
)

PARTITIONS = 6


def test_relay_replays_when_one_master_loses_its_data(
    pg_url: str, redis_cluster: RedisClusterServer, stream_prefix: str
) -> None:
    """Every key of this test's prefix deleted on one master only: the relay sees that master's new incarnation and re-publishes its replay window; all events arrive, in key order."""
    layout = StreamLayout(prefix=stream_prefix, default_partitions=PARTITIONS, hash_tags=True)
    streams = layout.streams_of("orders")
    config = RelayConfig(
        database_url=pg_url,
        broker_url=redis_cluster.url,
        layout=layout,
        poll_interval=dt.timedelta(seconds=0.05),
        replay_window=dt.timedelta(minutes=5),
    )
    client = redis_cluster.client()

    def total() -> int:
        return sum(int(client.xlen(s)) for s in streams)

    ids = write_events(pg_url, 200, keys=12)
    with capture_logs() as logs, relay_thread(config):
        wait_until(lambda: total() == 200)
        victim = redis_cluster.master_ports()[0]
        with redis_cluster.node_client(victim) as node:  # this prefix's data on that master only
            lost = list(node.scan_iter(match=f"{stream_prefix}*"))
            assert any(b"outboxkit:incarnation" in k for k in lost)  # the master's own token
            assert any(b"{orders:" in k for k in lost)  # and some partitions
            for key in lost:
                node.delete(key)
        more = write_events(pg_url, 50, keys=12, start=200)
        wait_until(lambda: {e["id"] for e in redis_entries(client, streams)} >= set(ids + more), timeout=30)
    assert_complete_and_ordered(redis_entries(client, streams), ids + more)
    assert [e["event"] for e in logs].count("relay.broker_data_lost") == 1
    client.close()
