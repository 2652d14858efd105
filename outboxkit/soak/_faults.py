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
    from ._proxy import FaultProxy


@dataclass(frozen=True, slots=True)
class Links:
    """One process's two proxied links."""

    db: FaultProxy
    # None on NATS: its clients learn every node's address from the servers and
    # connect to them directly, so one proxy cannot stand between them.
    broker: FaultProxy | None

    def proxies(self) -> list[FaultProxy]:
        """The proxies this process really goes through."""
        return [self.db] if self.broker is None else [self.db, self.broker]


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
    # relay_kill | consumer_kill | relay_pause | redis_restart | nats_node_restart | postgres_restart |
    # relay_broker_partition | relay_db_partition | consumer_db_partition |
    # relay_half_open | slow_links | link_drop (network faults, through the proxies)
    kind: str
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
    if profile.link_drop_every is not None:
        # Targets 0 .. relays-1 are relays, then the consumers.
        periodic("link_drop", profile.link_drop_every, profile.relays + profile.consumers)
    for kind, count, of in (
        ("relay_pause", profile.relay_pauses, profile.relays),
        (restart, restarts, nodes),
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
        relay_links: list[Links] | None = None,
        consumer_links: list[Links] | None = None,
        profile: Profile | None = None,
    ) -> None:
        super().__init__(name="fault-controller", daemon=True)
        self.plan = plan
        self.relays = relays
        self.consumers = consumers
        self.servers = servers
        self.pause_seconds = pause_seconds
        self.relay_links = relay_links or []
        self.consumer_links = consumer_links or []
        self.profile = profile
        self.injected: Counter[str] = Counter()
        self.restarted: Counter[str] = Counter()  # processes that exited by themselves
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
        elif fault.kind in BROKER_RESTARTS.values() and self.servers is not None:
            self.servers.restart_broker(fault.target)
        elif fault.kind == "postgres_restart" and self.servers is not None:
            self.servers.restart_postgres()
        elif fault.kind not in SERVER_FAULTS:
            self._inject_network(fault)

    def _inject_network(self, fault: Fault) -> None:
        profile = self.profile
        if profile is None:  # a controller without proxies has no network faults to inject
            return
        if fault.kind == "link_drop":
            links = (self.relay_links + self.consumer_links)[fault.target]
            for proxy in links.proxies():
                proxy.drop()
            return
        if fault.kind == "slow_links":
            every = [p for links in self.relay_links + self.consumer_links for p in links.proxies()]
            for proxy in every:
                proxy.slow(*profile.slow_latency)
            self._stop_event.wait(profile.slow_seconds)
            for proxy in every:
                proxy.slow(0.0)
            return
        self._cut_link(fault, profile)

    def _cut_link(self, fault: Fault, profile: Profile) -> None:
        """Partition (or half-open) one process's link for longer than its lease, then heal it."""
        if fault.kind == "consumer_db_partition":
            link, lease = self.consumer_links[fault.target].db, profile.consumer_lease_ttl
        elif fault.kind == "relay_db_partition":
            link, lease = self.relay_links[fault.target].db, profile.relay_lease_ttl
        else:  # relay_broker_partition, relay_half_open
            broker_link = self.relay_links[fault.target].broker
            if broker_link is None:  # NATS: no broker proxy (see Links); the fault is skipped
                return
            link, lease = broker_link, profile.relay_lease_ttl
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
            for proxy in links.proxies():
                proxy.slow(0.0)
                proxy.heal()
