"""The fault controller: one seeded schedule of kills, pauses and server restarts."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from tests._servers import PostgresServer, RedisServer

    from ._procs import Managed
    from ._profile import Profile
    from ._proxy import FaultProxy


@dataclass(frozen=True, slots=True)
class Links:
    """One process's two proxied links."""

    db: FaultProxy
    broker: FaultProxy


@dataclass(frozen=True, slots=True)
class Fault:
    """One scheduled fault: ``at`` seconds after the start."""

    at: float
    # relay_kill | consumer_kill | relay_pause | redis_restart | postgres_restart |
    # relay_broker_partition | relay_db_partition | consumer_db_partition |
    # relay_half_open | slow_links | link_drop (network faults, through the proxies)
    kind: str
    target: int = 0


def schedule(profile: Profile, seed: int) -> list[Fault]:
    """The whole fault plan, decided up front from the seed (so a run can be replayed)."""
    rng = random.Random(seed)
    horizon = profile.events / profile.rate  # seconds of writing
    faults: list[Fault] = []

    def periodic(kind: str, every: tuple[float, float], count: int) -> None:
        at = rng.uniform(*every)
        while at < horizon:
            faults.append(Fault(at, kind, rng.randrange(count)))
            at += rng.uniform(*every)

    periodic("relay_kill", profile.relay_kill_every, profile.relays)
    periodic("consumer_kill", profile.consumer_kill_every, profile.consumers)
    if profile.link_drop_every is not None:
        # Targets 0 .. relays-1 are relays, then the consumers.
        periodic("link_drop", profile.link_drop_every, profile.relays + profile.consumers)
    for kind, count, of in (
        ("relay_pause", profile.relay_pauses, profile.relays),
        ("redis_restart", profile.redis_restarts, 1),
        ("postgres_restart", profile.postgres_restarts, 1),
        ("relay_broker_partition", profile.relay_broker_partitions, profile.relays),
        ("relay_db_partition", profile.relay_db_partitions, profile.relays),
        ("consumer_db_partition", profile.consumer_db_partitions, profile.consumers),
        ("relay_half_open", profile.half_open_links, profile.relays),
        ("slow_links", profile.slow_links, 1),
    ):
        # Spread these over the middle of the run, apart from each other.
        for i in range(count):
            slot = (i + 1) / (count + 1)
            faults.append(Fault(horizon * rng.uniform(slot * 0.8, slot * 1.1), kind, rng.randrange(of)))
    return sorted(faults, key=lambda f: f.at)


class Controller(threading.Thread):
    """Executes the schedule against real processes and servers; stops early when asked."""

    def __init__(
        self,
        plan: list[Fault],
        *,
        relays: list[Managed],
        consumers: list[Managed],
        redis_server: RedisServer,
        pg_server: PostgresServer,
        pause_seconds: float,
        relay_links: list[Links] | None = None,
        consumer_links: list[Links] | None = None,
        profile: Profile | None = None,
    ) -> None:
        super().__init__(name="fault-controller", daemon=True)
        self.plan = plan
        self.relays = relays
        self.consumers = consumers
        self.redis_server = redis_server
        self.pg_server = pg_server
        self.pause_seconds = pause_seconds
        self.relay_links = relay_links or []
        self.consumer_links = consumer_links or []
        self.profile = profile
        self.injected: Counter[str] = Counter()
        self.restarted: Counter[str] = Counter()  # processes that exited by themselves
        self.log: list[dict[str, object]] = []
        self.errors: list[str] = []
        self._stop_event = threading.Event()
        self._redis_restarts = 0

    def stop(self) -> None:
        """Stop before the next fault."""
        self._stop_event.set()

    def run(self) -> None:
        """Inject each fault at its time."""
        start = time.monotonic()
        for fault in self.plan:
            if self._stop_event.wait(max(0.0, start + fault.at - time.monotonic())):
                return
            try:
                self._inject(fault)
            except Exception as exc:
                self.errors.append(f"{fault.kind}: {type(exc).__name__}: {exc}")
            self.injected[fault.kind] += 1
            self._supervise()
            self.log.append(
                {"at": round(time.monotonic() - start, 2), "kind": fault.kind, "target": fault.target}
            )

    def _supervise(self) -> None:
        """Start again a relay or consumer that exited by itself, as systemd or Kubernetes would.

        A network fault can hit a process while it starts (schema check, lease
        rows), where a database error ends it with its one-line message; its
        log keeps that line and ``restarted`` counts it in the verdict.
        """
        for managed in self.relays + self.consumers:
            if not managed.paused and not managed.alive():
                managed.reap(1)
                managed.start()
                self.restarted[managed.name] += 1

    def _inject(self, fault: Fault) -> None:
        if fault.kind == "relay_kill":
            self.relays[fault.target].kill_and_restart()
        elif fault.kind == "consumer_kill":
            self.consumers[fault.target].kill_and_restart()
        elif fault.kind == "relay_pause":
            relay = self.relays[fault.target]
            relay.signal(signal.SIGSTOP)
            relay.paused = True
            # Longer than the lease: another relay takes the partitions over.
            self._stop_event.wait(self.pause_seconds)
            relay.signal(signal.SIGCONT)
            relay.paused = False
        elif fault.kind == "redis_restart":
            self._restart_redis()
        elif fault.kind == "postgres_restart":
            self.pg_server.restart()  # immediate shutdown, then start
        else:
            self._inject_network(fault)

    def _inject_network(self, fault: Fault) -> None:
        assert self.profile is not None
        if fault.kind == "link_drop":
            links = (self.relay_links + self.consumer_links)[fault.target]
            links.db.drop()
            links.broker.drop()
        elif fault.kind == "slow_links":
            every = [p for links in self.relay_links + self.consumer_links for p in (links.db, links.broker)]
            for proxy in every:
                proxy.slow(*self.profile.slow_latency)
            self._stop_event.wait(self.profile.slow_seconds)
            for proxy in every:
                proxy.slow(0.0)
        else:
            proxy, lease = {
                "relay_broker_partition": (lambda: self.relay_links[fault.target].broker, self.profile.relay_lease_ttl),
                "relay_db_partition": (lambda: self.relay_links[fault.target].db, self.profile.relay_lease_ttl),
                "consumer_db_partition": (lambda: self.consumer_links[fault.target].db, self.profile.consumer_lease_ttl),
                "relay_half_open": (lambda: self.relay_links[fault.target].broker, self.profile.relay_lease_ttl),
            }[fault.kind]  # fmt: skip
            link = proxy()
            if fault.kind == "relay_half_open":
                link.half_open()
            else:
                link.partition()
            # Longer than the lease: another process takes the partitions over meanwhile.
            self._stop_event.wait(lease * 1.5)
            link.heal()

    def heal_network(self) -> None:
        """Every link forwarding at full speed again (the run's heal phase)."""
        for links in self.relay_links + self.consumer_links:
            for proxy in (links.db, links.broker):
                proxy.slow(0.0)
                proxy.heal()

    def _restart_redis(self) -> None:
        # The first restart loses everything (no persistence); afterwards AOF is
        # switched on at runtime, so the next SIGKILL keeps what was written.
        self._redis_restarts += 1
        self.redis_server.kill()
        self.redis_server.restart(persistence=self.redis_server.persistence)
        if self.redis_server.persistence == "none":
            client = redis.Redis.from_url(self.redis_server.url)
            try:
                client.config_set("appendfsync", "always")
                client.config_set("appendonly", "yes")
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    info = client.info("persistence")
                    if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                        break
                    time.sleep(0.1)
            finally:
                client.close()
            self.redis_server.persistence = "aof"
