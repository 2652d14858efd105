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
        drain_timeout=120.0,
        run_timeout=240.0,
    ),
    "full": Profile(name="full", events=100_000, rate=450.0, run_timeout=1800.0, drain_timeout=300.0),
}
