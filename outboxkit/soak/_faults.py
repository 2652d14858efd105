"""The fault controller: one seeded schedule of kills, pauses and server restarts.

Process faults (SIGKILL, SIGSTOP) need only the processes the soak started.
Server restarts need control of the servers, which an installed user running
``outboxkit soak`` against their own PostgreSQL and broker does not give: they
happen only when a :class:`ServerFaults` is passed (the test suite passes one
over the servers it starts, tests/soak.py). Each broker has its own restart
fault: Redis is killed and started again (``redis_restart``); on NATS one
JetStream node of the cluster is (``nats_node_restart``), so a stream leader
moves while the others keep quorum.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._procs import Managed
    from ._profile import Profile


BROKER_RESTARTS = {"redis_streams": "redis_restart", "nats_jetstream": "nats_node_restart"}
SERVER_FAULTS = frozenset({*BROKER_RESTARTS.values(), "postgres_restart"})
# Nodes of the NATS cluster a soak restarts one of (the suite's cluster has three).
NATS_NODES = 3


class ServerFaults(Protocol):
    """Restarts of the servers under test, for a soak that controls them."""

    def restart_broker(self, target: int) -> None:
        """Kill the broker (Redis; or NATS node ``target``) at an arbitrary instant and start it again."""

    def restart_postgres(self) -> None:
        """Shut PostgreSQL down immediately and start it again."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One scheduled fault: ``at`` seconds after the start."""

    at: float
    kind: (
        str  # relay_kill | consumer_kill | relay_pause | redis_restart | nats_node_restart | postgres_restart
    )
    target: int = 0


def schedule(
    profile: Profile, seed: int, *, server_faults: bool = True, broker: str = "redis_streams"
) -> list[Fault]:
    """The whole fault plan, decided up front from the seed (so a run can be replayed).

    Without ``server_faults`` the server restarts are left out of the plan; the
    process faults are the same as with them (same seed, same instants).
    ``broker`` (a :func:`brokers.broker_kind`) picks the broker's restart fault.
    """
    restart = BROKER_RESTARTS.get(broker)
    if restart is None:
        msg = f"the soak has no broker faults for the {broker} broker"
        raise ValueError(msg)
    restarts, nodes = (
        (profile.redis_restarts, 1)
        if restart == "redis_restart"
        else (profile.nats_node_restarts, NATS_NODES)
    )
    rng = random.Random(seed)  # noqa: S311 - a replayable schedule, not a secret
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
        (restart, restarts, nodes),
        ("postgres_restart", profile.postgres_restarts, 1),
    ):
        # Spread these over the middle of the run, apart from each other.
        for i in range(count):
            slot = (i + 1) / (count + 1)
            faults.append(Fault(horizon * rng.uniform(slot * 0.8, slot * 1.1), kind, rng.randrange(of)))
    if not server_faults:
        faults = [f for f in faults if f.kind not in SERVER_FAULTS]
    return sorted(faults, key=lambda f: f.at)


class Controller(threading.Thread):
    """Executes the schedule against real processes and servers; stops early when asked."""

    def __init__(
        self,
        plan: list[Fault],
        *,
        relays: list[Managed],
        consumers: list[Managed],
        servers: ServerFaults | None,
        pause_seconds: float,
    ) -> None:
        super().__init__(name="fault-controller", daemon=True)
        self.plan = plan
        self.relays = relays
        self.consumers = consumers
        self.servers = servers
        self.pause_seconds = pause_seconds
        self.injected: Counter[str] = Counter()
        self.log: list[dict[str, object]] = []
        self.errors: list[str] = []
        self._stop_event = threading.Event()

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
            except Exception as exc:  # noqa: BLE001 - a failed injection is reported in the verdict
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
        elif fault.kind in BROKER_RESTARTS.values() and self.servers is not None:
            self.servers.restart_broker(fault.target)
        elif fault.kind == "postgres_restart" and self.servers is not None:
            self.servers.restart_postgres()
