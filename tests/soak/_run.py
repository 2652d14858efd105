"""One soak run: servers, processes, faults, heal, drain, check, verdict."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
from sqlalchemy.exc import DBAPIError

import outbox
from tests._servers import PostgresServer, RedisServer

from . import _checker, _schema
from ._faults import Controller, Links, schedule
from ._procs import Managed, RssSampler, cli, python_env, wait_until
from ._profile import Profile
from ._proxy import FaultProxy, proxied_url
from .handlers import GROUP, TOPIC

SENTINEL = "Sentinel-pw-7f3a9c"  # must never appear in any log, error or status output


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


def _urls(pg: PostgresServer, rds: RedisServer, dbname: str) -> tuple[str, str]:
    # The PostgreSQL server trusts loopback, so the sentinel password is
    # accepted and ignored: it is there only to prove it never leaks.
    db = pg.url(dbname).replace("outboxkit@", f"outboxkit:{SENTINEL}@", 1)
    return db, rds.url


def _links(count: int, db: str, broker: str, name: str) -> list[Links]:
    """A started fault proxy to PostgreSQL and one to Redis for each of ``count`` processes."""
    db_at, broker_at = urlsplit(db), urlsplit(broker)
    assert db_at.port is not None
    assert broker_at.port is not None
    return [
        Links(
            db=FaultProxy("127.0.0.1", db_at.port, name=f"{name}-{i}-db", seed=i).start(),
            broker=FaultProxy("127.0.0.1", broker_at.port, name=f"{name}-{i}-broker", seed=i).start(),
        )
        for i in range(count)
    ]


def _relays(profile: Profile, db: str, broker: str, logs: Path, links: list[Links]) -> list[Managed]:
    return [
        Managed(
            f"relay-{i}",
            cli(
                "relay",
                "--db",
                proxied_url(db, links[i].db.port),
                "--broker",
                proxied_url(broker, links[i].broker.port),
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
                "tests.soak.handlers:registry",
                "--db",
                proxied_url(db, links[i].db.port),
                "--broker",
                proxied_url(broker, links[i].broker.port),
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
                "tests.soak.writer",
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


def run(profile: Profile, seed: int, out: Path) -> Verdict:
    """Run the soak; write logs and the verdict into ``out``."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    verdict = Verdict(profile=profile.name, seed=seed)
    with PostgresServer(durable=True) as pg, RedisServer(password=SENTINEL) as rds:
        pg.create_database("soak")
        db, broker = _urls(pg, rds, "soak")
        outbox.upgrade(db)
        _schema.create(db, profile.keys)
        # Every relay and consumer reaches both servers through its own fault proxies.
        relay_links = _links(profile.relays, db, broker, "relay")
        consumer_links = _links(profile.consumers, db, broker, "consumer")
        relays = _relays(profile, db, broker, logs, relay_links)
        consumers = _consumers(profile, db, broker, logs, consumer_links)
        writers = _writers(profile, db, seed, logs)
        everyone = relays + consumers + writers
        plan = schedule(profile, seed)
        (out / "fault_plan.json").write_text(json.dumps([dataclasses.asdict(f) for f in plan], indent=1))
        controller = Controller(
            plan,
            relays=relays,
            consumers=consumers,
            redis_server=rds,
            pg_server=pg,
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
            status = subprocess.run(
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
        for links in relay_links + consumer_links:
            links.db.stop()
            links.broker.stop()
        verdict.counts = _checker.count(db)
        verdict.faults = dict(controller.injected)
        verdict.supervisor_restarts = dict(controller.restarted)
        verdict.fault_errors = controller.errors
        verdict.writers = _writer_stats(logs, writers)
        committed = verdict.counts.expected
        verdict.events_per_second = (
            round(committed / verdict.write_seconds, 1) if verdict.write_seconds else 0.0
        )
        verdict.duplicate_deliveries = _count_in_logs(logs, "inbox.duplicate_skipped")
        verdict.secret_leaks = _leaks(logs)
        _judge(verdict, profile, drained)
        if not verdict.ok:
            _snapshot(out, db, rds)
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


def _leaks(logs: Path) -> list[str]:
    return sorted(path.name for path in logs.iterdir() if SENTINEL in path.read_text(errors="replace"))


def _judge(verdict: Verdict, profile: Profile, drained: bool) -> None:
    counts = verdict.counts
    assert counts is not None
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


def _snapshot(out: Path, db: str, rds: RedisServer) -> None:
    """Leave the ledgers and the streams' shape next to the logs, for replaying a failure."""
    snap = out / "snapshot"
    snap.mkdir(exist_ok=True)
    dsn = db.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn) as conn:
        for table in ("soak_expected", "soak_applied", "outbox", "outbox_dead_letter"):
            with (
                (snap / f"{table}.csv").open("wb") as fh,
                conn.cursor().copy(f"COPY {table} TO STDOUT WITH CSV HEADER") as copy,
            ):
                for chunk in copy:
                    fh.write(chunk)
    client = redis.Redis.from_url(rds.url)
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
