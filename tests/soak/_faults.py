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


@dataclass(frozen=True, slots=True)
class Fault:
    """One scheduled fault: ``at`` seconds after the start."""

    at: float
    kind: str  # relay_kill | consumer_kill | relay_pause | redis_restart | postgres_restart
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
    for kind, count, of in (
        ("relay_pause", profile.relay_pauses, profile.relays),
        ("redis_restart", profile.redis_restarts, 1),
        ("postgres_restart", profile.postgres_restarts, 1),
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
    ) -> None:
        super().__init__(name="fault-controller", daemon=True)
        self.plan = plan
        self.relays = relays
        self.consumers = consumers
        self.redis_server = redis_server
        self.pg_server = pg_server
        self.pause_seconds = pause_seconds
        self.injected: Counter[str] = Counter()
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
            self.log.append(
                {"at": round(time.monotonic() - start, 2), "kind": fault.kind, "target": fault.target}
            )

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
