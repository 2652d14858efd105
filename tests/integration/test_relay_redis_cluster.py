"""The relay on a real Redis Cluster: one master losing its data is noticed for that master (#11)."""

from __future__ import annotations

import datetime as dt

from structlog.testing import capture_logs

from brokers import StreamLayout
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


def _move_slot(cluster: RedisClusterServer, slot: int) -> tuple[int, int]:
    """Migrate ``slot`` and its keys to another master, as ``redis-cli --cluster reshard`` does; return (from, to)."""
    masters = cluster.master_ports()
    with cluster.client() as client:
        source = client.nodes_manager.get_node_from_slot(slot).port
    target = next(p for p in masters if p != source)
    src, dst = cluster.node_client(source), cluster.node_client(target)
    try:
        src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        for port in masters:
            with cluster.node_client(port) as node:
                node.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
    finally:
        src.close()
        dst.close()
    return source, target


def test_relay_follows_a_slot_moved_to_another_master(
    pg_url: str, redis_cluster: RedisClusterServer, stream_prefix: str
) -> None:
    """A stream's slot migrated between batches: the relay gets MOVED, reads the slot map again and goes on; one warning, no error."""
    layout = StreamLayout(prefix=stream_prefix, hash_tags=True)
    stream = layout.stream_for("moved", 0)
    config = RelayConfig(
        database_url=pg_url,
        broker_url=redis_cluster.url,
        layout=layout,
        poll_interval=dt.timedelta(seconds=0.05),
    )
    client = redis_cluster.client()
    ids = write_events(pg_url, 100, topic="moved")
    with capture_logs() as logs, relay_thread(config):
        wait_until(lambda: int(client.xlen(stream)) == 100)
        source, target = _move_slot(redis_cluster, client.keyslot(stream))
        more = write_events(pg_url, 100, topic="moved", start=100)
        wait_until(lambda: int(client.xlen(stream)) >= 200, timeout=30)
    assert client.get_node_from_key(stream).port == target != source
    assert_complete_and_ordered(redis_entries(client, [stream]), ids + more)
    assert not [e for e in logs if e["log_level"] in {"error", "critical"}]
    unsettled = [e for e in logs if e["event"] == "broker.cluster_unsettled"]
    assert len(unsettled) == 1  # the MOVED reply, warned about once
    assert "MovedError" in unsettled[0]["error"]
    assert "relay.broker_data_lost" not in [e["event"] for e in logs]
    client.close()
