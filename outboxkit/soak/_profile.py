"""Soak profiles: workload size and fault schedule, all bounded in count and time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class Profile:
    """One soak configuration."""

    name: str
    events: int  # committed events to produce, across all writers
    writers: int = 4
    keys: int = 1000
    rate: float  # events per second across all writers (paces the run so faults overlap it)
    rollback_ratio: float = 0.05
    hold_ratio: float = 0.02
    hold_seconds: tuple[float, float] = (0.5, 3.0)
    relays: int = 3
    consumers: int = 3
    stream_partitions: int = 6
    relay_lease_ttl: float = 3.0
    consumer_lease_ttl: float = 4.0
    relay_kill_every: tuple[float, float] = (5.0, 15.0)
    consumer_kill_every: tuple[float, float] = (10.0, 20.0)
    relay_pauses: int = 2
    redis_restarts: int = 2  # the first without persistence, the next with AOF
    nats_node_restarts: int = 2  # a JetStream node SIGKILLed and started again (NATS broker)
    postgres_restarts: int = 1
    # Network faults through the per-process fault proxies (outboxkit/soak/_proxy.py), issue 17.
    relay_broker_partitions: int = 2  # a relay cut from Redis for 1.5x its lease, mid-batch under load
    relay_db_partitions: int = 2  # a relay cut from PostgreSQL (its batch may be in Redis, unmarked)
    consumer_db_partitions: int = 2  # a consumer cut from PostgreSQL (handler ran, commit in flight)
    half_open_links: int = 2  # a relay's Redis link stops forwarding without closing
    slow_links: int = 2  # every link slowed (latency + jitter) for slow_seconds
    slow_seconds: float = 8.0
    slow_latency: tuple[float, float] = (0.02, 0.03)  # latency, jitter per chunk, seconds
    link_drop_every: tuple[float, float] | None = (3.0, 8.0)  # reset one process's links
    drain_timeout: float = 180.0
    rss_bound_mb: float = 400.0
    run_timeout: float = 900.0


PROFILES = {
    # Inside the normal suite: fewer processes so 2 cores keep up, same faults.
    "smoke": Profile(
        name="smoke",
        events=10_000,
        rate=250.0,
        relays=2,
        consumers=2,
        relay_kill_every=(6.0, 10.0),
        consumer_kill_every=(10.0, 16.0),
        relay_pauses=1,
        redis_restarts=1,
        nats_node_restarts=1,
        postgres_restarts=0,
        relay_broker_partitions=1,
        relay_db_partitions=1,
        consumer_db_partitions=1,
        half_open_links=1,
        slow_links=1,
        slow_seconds=5.0,
        link_drop_every=(4.0, 8.0),
        drain_timeout=120.0,
        run_timeout=240.0,
    ),
    "full": Profile(name="full", events=100_000, rate=450.0, run_timeout=1800.0, drain_timeout=300.0),
    # >= 1,000 injected faults of every kind (process, server, network): docs/reliability.md.
    "faults": Profile(
        name="faults",
        events=100_000,
        rate=300.0,
        relay_pauses=4,
        redis_restarts=2,
        postgres_restarts=2,
        relay_broker_partitions=6,
        relay_db_partitions=6,
        consumer_db_partitions=6,
        half_open_links=6,
        slow_links=6,
        link_drop_every=(0.1, 0.4),
        run_timeout=2400.0,
        drain_timeout=300.0,
    ),
}
