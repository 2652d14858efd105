"""One soak run against given PostgreSQL and broker URLs: processes, faults, heal, drain, check, verdict.

The broker is Redis Streams (``redis://``) or NATS JetStream (``nats://``,
``tls://``). The database and the broker must be the soak's own (it creates
its ledgers, fills the outbox and the ``soak.events`` streams):
:func:`preflight` refuses ones a previous run used, since their old entries
would count as phantom events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

import outbox
from brokers import broker_kind, connect_subscriber
from outbox import BrokerError, ConfigError, redact_url

from . import _checker, _schema
from ._faults import BROKER_RESTARTS, Controller, Links, ServerFaults, schedule
from ._procs import Managed, RssSampler, cli, python_env, wait_until
from ._profile import Profile
from ._proxy import FaultProxy, proxied_url
from .handlers import GROUP, TOPIC


@dataclass
class Verdict:
    """Everything the run measured; ``ok`` is false on any guarantee violation."""

    profile: str
    seed: int
    counts: _checker.Counts | None = None
    duplicate_deliveries: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    supervisor_restarts: dict[str, int] = field(default_factory=dict)
    fault_errors: list[str] = field(default_factory=list)
    writers: list[dict[str, int]] = field(default_factory=list)
    events_per_second: float = 0.0
    write_seconds: float = 0.0
    drain_seconds: float | None = None
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    secret_leaks: list[str] = field(default_factory=list)
    stop_exit_codes: dict[str, int | None] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No guarantee was violated."""
        return not self.violations


def _passwords(db: str, broker: str) -> list[str]:
    """The passwords in the two URLs: none of them may appear in any log (G7)."""
    found = [make_url(db).password, urlsplit(broker).password]
    return sorted({unquote(str(p)) for p in found if p})


def preflight(db: str, broker: str) -> None:
    """Refuse URLs the soak cannot use, each with one line saying what to give instead.

    Raises:
        ConfigError: not PostgreSQL and Redis or NATS, or a database/broker a previous soak filled.
    """
    try:
        backend = make_url(db).get_backend_name()
    except (ArgumentError, ValueError):
        backend = ""
    if backend != "postgresql":
        raise ConfigError(f"the soak needs a PostgreSQL database URL, got {redact_url(db)}")
    kind = broker_kind(broker)
    if kind not in BROKER_RESTARTS:
        raise ConfigError(f"the soak needs a Redis or NATS broker URL, got {redact_url(broker)}")
    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            used = sa.inspect(conn).has_table("soak_expected")
    except DBAPIError as exc:
        raise ConfigError(f"database at {redact_url(db)} unreachable: {type(exc.orig).__name__}") from None
    finally:
        engine.dispose()
    if used:
        raise ConfigError(
            f"database at {redact_url(db)} already holds a soak's ledgers: give a fresh database"
        )
    if kind == "nats_jetstream":
        _refuse_filled_nats(broker)
    else:
        _refuse_filled_redis(broker)


def _refuse_filled_nats(broker: str) -> None:
    try:
        filled = _nats_streams(broker)
    except BrokerError as exc:
        raise ConfigError(f"NATS at {redact_url(broker)} unreachable: {exc}") from None
    if filled:
        raise ConfigError(
            f"NATS at {redact_url(broker)} already holds {TOPIC} streams: give a fresh account or delete them"
        )


def _refuse_filled_redis(broker: str) -> None:
    client = redis.Redis.from_url(broker)
    try:
        streams = next(iter(client.scan_iter(match=f"{TOPIC}*", count=1000, _type="stream")), None)
    except redis.RedisError as exc:
        raise ConfigError(f"Redis at {redact_url(broker)} unreachable: {type(exc).__name__}") from None
    finally:
        client.close()
    if streams is not None:
        raise ConfigError(
            f"Redis at {redact_url(broker)} already holds {TOPIC} streams: give a fresh database"
        )


def _nats_streams(broker: str) -> dict[str, int]:
    """The soak's streams on a NATS broker holding entries, with their counts."""

    async def listed() -> dict[str, int]:
        subscriber = connect_subscriber(broker)
        try:
            return await subscriber.list_streams(TOPIC)
        finally:
            await subscriber.aclose()

    return asyncio.run(listed())


def _proxies(profile: Profile, db: str, broker: str) -> tuple[list[Links], list[Links]]:
    """Started fault proxies (to PostgreSQL, to Redis) for every relay and every consumer."""
    return _links(profile.relays, db, broker, "relay"), _links(profile.consumers, db, broker, "consumer")


def _stop_proxies(*groups: list[Links]) -> None:
    for links in (link for group in groups for link in group):
        for proxy in links.proxies():
            proxy.stop()


def _links(count: int, db: str, broker: str, name: str) -> list[Links]:
    """A started fault proxy to PostgreSQL and one to Redis for each of ``count`` processes."""
    db_at, broker_at = urlsplit(db), urlsplit(broker)
    # The proxies listen on 127.0.0.1; the servers may be anywhere (given URLs or local ones).
    db_host, db_port = db_at.hostname or "127.0.0.1", db_at.port or 5432
    proxy_broker = broker_kind(broker) == "redis_streams"  # not NATS: see Links
    broker_host = broker_at.hostname or "127.0.0.1" if proxy_broker else ""
    broker_port = broker_at.port or 6379 if proxy_broker else 0
    return [
        Links(
            db=FaultProxy(db_host, db_port, name=f"{name}-{i}-db", seed=i).start(),
            broker=FaultProxy(broker_host, broker_port, name=f"{name}-{i}-broker", seed=i).start()
            if proxy_broker
            else None,
        )
        for i in range(count)
    ]


def _broker_url(broker: str, links: Links) -> str:
    return broker if links.broker is None else proxied_url(broker, links.broker.port)


def _relays(profile: Profile, db: str, broker: str, logs: Path, links: list[Links]) -> list[Managed]:
    return [
        Managed(
            f"relay-{i}",
            cli(
                "relay",
                "--db",
                proxied_url(db, links[i].db.port),
                "--broker",
                _broker_url(broker, links[i]),
                "--lease-ttl",
                str(profile.relay_lease_ttl),
                "--topic-partitions",
                f"{TOPIC}={profile.stream_partitions}",
                "--replay-window",
                "3600",
                "--poll-interval",
                "0.2",
                "--relay-id",
                f"relay-{i}",
            ),
            logs,
        )
        for i in range(profile.relays)
    ]


def _consumers(profile: Profile, db: str, broker: str, logs: Path, links: list[Links]) -> list[Managed]:
    return [
        Managed(
            f"consumer-{i}",
            cli(
                "consume",
                "outboxkit.soak.handlers:registry",
                "--db",
                proxied_url(db, links[i].db.port),
                "--broker",
                _broker_url(broker, links[i]),
                "--group",
                GROUP,
                "--consumer-name",
                f"consumer-{i}",
                "--topic-partitions",
                f"{TOPIC}={profile.stream_partitions}",
                "--lease-ttl",
                str(profile.consumer_lease_ttl),
                "--claim-idle",
                "5",
                "--max-deliveries",
                "50",
                "--block",
                "1",
            ),
            logs,
        )
        for i in range(profile.consumers)
    ]


def _writers(profile: Profile, db: str, seed: int, logs: Path) -> list[Managed]:
    per_writer = profile.events // profile.writers
    rate = profile.rate / profile.writers
    lo, hi = profile.hold_seconds
    return [
        Managed(
            f"writer-{i}",
            [
                sys.executable,
                "-m",
                "outboxkit.soak.writer",
                db,
                str(i),
                str(per_writer),
                str(profile.keys),
                str(rate),
                str(seed),
                str(profile.rollback_ratio),
                str(profile.hold_ratio),
                str(lo),
                str(hi),
            ],
            logs,
        )
        for i in range(profile.writers)
    ]


def _progress(db: str) -> tuple[int, int] | None:
    try:
        return _checker.applied_distinct(db)
    except DBAPIError:
        return None


def run(
    profile: Profile, seed: int, out: Path, *, db: str, broker: str, servers: ServerFaults | None = None
) -> Verdict:
    """Run the soak against ``db`` (PostgreSQL) and ``broker`` (Redis or NATS); logs, verdict to ``out``.

    ``servers`` restarts those servers during the run; without it only the
    processes are killed and paused. Call :func:`preflight` first.
    """
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    verdict = Verdict(profile=profile.name, seed=seed)
    outbox.upgrade(db)
    _schema.create(db, profile.keys)
    # Every relay and consumer reaches both servers through its own fault proxies.
    relay_links, consumer_links = _proxies(profile, db, broker)
    relays = _relays(profile, db, broker, logs, relay_links)
    consumers = _consumers(profile, db, broker, logs, consumer_links)
    writers = _writers(profile, db, seed, logs)
    everyone = relays + consumers + writers
    plan = schedule(profile, seed, server_faults=servers is not None, broker=broker_kind(broker))
    (out / "fault_plan.json").write_text(json.dumps([dataclasses.asdict(f) for f in plan], indent=1))
    controller = Controller(
        plan,
        relays=relays,
        consumers=consumers,
        servers=servers,
        pause_seconds=profile.relay_lease_ttl * 2.5,
        relay_links=relay_links,
        consumer_links=consumer_links,
        profile=profile,
    )
    with RssSampler(everyone) as sampler:
        for managed in relays + consumers + writers:
            managed.start()
        started = time.monotonic()
        controller.start()
        deadline = started + profile.run_timeout
        for writer in writers:
            while writer.alive() and time.monotonic() < deadline:
                time.sleep(0.5)
        verdict.write_seconds = round(time.monotonic() - started, 1)
        controller.stop()
        controller.join(60)
        # Heal: every link forwarding, every process running and unpaused, servers up.
        controller.heal_network()
        for managed in relays + consumers:
            managed.signal(signal.SIGCONT)
            if not managed.alive():
                managed.start()
        heal = time.monotonic()
        drained = wait_until(
            lambda: (p := _progress(db)) is not None and p[0] >= p[1], profile.drain_timeout, interval=1.0
        )
        verdict.drain_seconds = round(time.monotonic() - heal, 1) if drained else None
        status = subprocess.run(  # noqa: S603 - argv built by the soak itself
            cli("status", "--db", db, "--broker", broker),
            capture_output=True,
            text=True,
            env=python_env(),
            timeout=60,
            check=False,
        )
        (logs / "status.txt").write_text(status.stdout + status.stderr)
        for managed in relays + consumers:
            verdict.stop_exit_codes[managed.name] = managed.stop(15)
        for writer in writers:
            writer.stop(5)
        verdict.peak_rss_mb = {k: round(v, 1) for k, v in sorted(sampler.peaks.items())}
    _stop_proxies(relay_links, consumer_links)
    verdict.counts = _checker.count(db)
    verdict.faults = dict(controller.injected)
    verdict.supervisor_restarts = dict(controller.restarted)
    verdict.fault_errors = controller.errors
    verdict.writers = _writer_stats(logs, writers)
    committed = verdict.counts.expected
    verdict.events_per_second = round(committed / verdict.write_seconds, 1) if verdict.write_seconds else 0.0
    verdict.duplicate_deliveries = _count_in_logs(logs, "inbox.duplicate_skipped")
    verdict.secret_leaks = _leaks(logs, _passwords(db, broker))
    _judge(verdict, profile, drained)
    if not verdict.ok:
        _snapshot(out, db, broker)
    (out / "verdict.json").write_text(json.dumps(verdict_json(verdict), indent=2))
    return verdict


def verdict_json(verdict: Verdict) -> dict[str, object]:
    """The verdict as plain JSON data."""
    data = dataclasses.asdict(verdict)
    data["ok"] = verdict.ok
    return data


def _writer_stats(logs: Path, writers: list[Managed]) -> list[dict[str, int]]:
    lines = [
        line
        for writer in writers
        for line in (logs / f"{writer.name}.log").read_text(errors="replace").splitlines()
    ]
    return [json.loads(line) for line in lines if line.startswith('{"writer"')]


def _count_in_logs(logs: Path, event: str) -> int:
    needle = f'"event": "{event}"'
    return sum(path.read_text(errors="replace").count(needle) for path in logs.glob("*.log"))


def _leaks(logs: Path, secrets: list[str]) -> list[str]:
    return sorted(
        path.name
        for path in logs.iterdir()
        if any(secret in path.read_text(errors="replace") for secret in secrets)
    )


def _judge(verdict: Verdict, profile: Profile, drained: bool) -> None:
    counts = verdict.counts
    if counts is None:  # pragma: no cover - run() counts before judging
        raise RuntimeError("the soak judged a verdict before counting")
    checks = {
        "G1 lost events": counts.lost,
        "G2 phantom events": counts.unexpected,
        "G3 double applications": counts.doubled,
        "G4 per-key order violations": counts.order_violations,
    }
    verdict.violations = [f"{name}: {value}" for name, value in checks.items() if value]
    over = {k: v for k, v in verdict.peak_rss_mb.items() if v > profile.rss_bound_mb}
    if over:
        verdict.violations.append(f"G5 RSS over {profile.rss_bound_mb} MiB: {over}")
    if not drained:
        verdict.violations.append(f"G6 backlog not drained within {profile.drain_timeout} s")
    if verdict.secret_leaks:
        verdict.violations.append(f"G7 secret in: {verdict.secret_leaks}")
    if counts.expected < profile.events:
        verdict.violations.append(
            f"workload incomplete: {counts.expected} of {profile.events} events committed"
        )
    if verdict.fault_errors:
        verdict.violations.append(f"fault injection failed: {verdict.fault_errors}")


def _snapshot(out: Path, db: str, broker: str) -> None:
    """Leave the ledgers and the streams' shape next to the logs, for replaying a failure."""
    snap = out / "snapshot"
    snap.mkdir(exist_ok=True)
    dsn = make_url(db).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        for table in ("soak_expected", "soak_applied", "outbox", "outbox_dead_letter"):
            with (
                (snap / f"{table}.csv").open("wb") as fh,
                conn.cursor().copy(f"COPY {table} TO STDOUT WITH CSV HEADER") as copy,
            ):
                for chunk in copy:
                    fh.write(chunk)
    if broker_kind(broker) == "nats_jetstream":
        with contextlib.suppress(BrokerError):  # a snapshot of a failed run must not hide its verdict
            (snap / "streams.json").write_text(json.dumps(_nats_streams(broker), indent=1))
        return
    client = redis.Redis.from_url(broker)
    try:
        streams = {}
        for key in client.scan_iter(match=f"{TOPIC}*", count=1000):
            name = key.decode()
            info = client.xinfo_stream(name)
            streams[name] = {
                "length": info["length"],
                "first": str(info.get("first-entry")),
                "last": str(info.get("last-entry")),
            }
        (snap / "streams.json").write_text(json.dumps(streams, indent=1, default=str))
    finally:
        client.close()
