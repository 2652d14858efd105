"""Type-checked use of the relay's public API (checked by mypy, never run)."""

from __future__ import annotations

import datetime as dt

from brokers import Fence, OutgoingEntry, PublishResult, StreamLayout, connect_publisher
from brokers.memory import MemoryBroker, MemoryPublisher
from relay import MetricsServer, Relay, RelayConfig, RelayMetrics, RelayStats


def run_relay() -> RelayStats:
    config = RelayConfig(
        database_url="postgresql+psycopg://app@localhost/app",
        broker_url="rediss://relay:secret@redis.internal:6380/0",
        layout=StreamLayout(prefix="orders-svc:", partitions={"orders": 4}),
        batch_size=500,
        lease_ttl=dt.timedelta(seconds=10),
        replay_window=dt.timedelta(minutes=5),
        max_attempts=8,
    )
    metrics = RelayMetrics()
    relay = Relay(config, metrics=metrics)
    server = MetricsServer(metrics, lambda: relay.healthy(60.0), host="127.0.0.1", port=9100)
    server.start()
    try:
        return relay.run()
    finally:
        server.close()


def publish_directly() -> PublishResult:
    publisher = connect_publisher("memory://types")
    entry = OutgoingEntry("orders", {"id": "x"}, order_key="o-1")
    return publisher.publish([entry], fences=[Fence("outbox:0", 1)], incarnation=None)


def in_memory() -> MemoryPublisher:
    broker = MemoryBroker()
    broker.reject = lambda entry: "too large" if len(entry.fields.get("data", "")) > 10 else None
    return MemoryPublisher(broker)
