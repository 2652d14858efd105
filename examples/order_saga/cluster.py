"""Start, kill and restart the services' processes; place orders; wait for the end; check.

Each service has its own database and two processes, ``outboxkit relay`` and
``outboxkit consume``; all talk through one broker (Redis Streams, or the
SQL-table broker). JSON logs go to ``<workdir>/<process>.log``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import outbox
from brokers import StreamLayout, connect_subscriber
from outbox.tables import outbox_tables
from outboxkit.demo import (
    INVENTORY,
    INVENTORY_COMMANDS,
    INVENTORY_EVENTS,
    ORDER,
    ORDER_DEADLINES,
    ORDER_EVENTS,
    PAYMENT,
    PAYMENT_COMMANDS,
    PAYMENT_EVENTS,
    REPLY_TOPIC,
    SERVICES,
    TIMER_TOPIC,
    Check,
    OrderSpec,
    Style,
    check_consistency,
    initial_stock,
    make_orchestrator,
    order_saga,
    place_order,
    place_order_choreographed,
    prepare_databases,
    seed_stock,
    select_orders,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRIES = "examples.order_saga.services"


class ProcessExitedError(RuntimeError):
    """One of the services' processes ended while the run needed it."""

    def __init__(self, name: str, returncode: int, log: Path, restart: str) -> None:
        how = f"killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
        super().__init__(f"{name} {how}; its log: {log}; restart it with: {restart}")
        self.name = name
        self.returncode = returncode


def database_urls(db_base: str) -> dict[str, str]:
    """``db_base`` with ``{service}`` replaced by each service's name; PostgreSQL databases are created."""
    if "{service}" not in db_base:
        msg = "--db-base must contain {service}, e.g. postgresql+psycopg://localhost/shop_{service}"
        raise SystemExit(msg)
    urls = {s.name: db_base.replace("{service}", s.name) for s in SERVICES}
    for url in urls.values():
        create_database(url)
    return urls


def create_database(url: str) -> None:
    """Create the PostgreSQL database of ``url`` if it does not exist (SQLite files create themselves)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        return
    admin = sa.create_engine(
        parsed.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )
    with admin.connect() as conn:
        exists = conn.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
        ).first()
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


@dataclass
class Cluster:
    """The six processes of the three services, and the order service's front door."""

    urls: dict[str, str]
    broker: str
    workdir: Path
    style: Style = Style.ORCHESTRATED
    step_timeout: float = 30.0
    prefix: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _log_offsets: dict[str, int] = field(default_factory=dict)
    _restarts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.engines = {name: sa.create_engine(url) for name, url in self.urls.items()}
        self.orchestrator = make_orchestrator(order_saga(timeout=dt.timedelta(seconds=self.step_timeout)))

    # -- set-up ----------------------------------------------------------------------

    def prepare(self, orders: int) -> None:
        """Migrate the databases (and the SQL broker), create the business tables, stock the shelves.

        A database left by an earlier run is reset first: its example tables
        are dropped and the toolkit's tables downgraded to nothing (other
        tables are not touched), so every run starts from empty services.
        """
        sql_broker = not self.broker.startswith(("redis://", "rediss://", "unix://"))
        if sql_broker:
            create_database(self.broker)
        self._reset()
        prepare_databases(self.urls)
        if sql_broker:
            outbox.upgrade(self.broker)
        seed_stock(self.engines[INVENTORY.name], initial_stock(orders))

    def _reset(self) -> None:
        for service in SERVICES:
            engine = self.engines[service.name]
            with engine.connect() as conn:
                used = sa.inspect(conn).has_table(service.outbox.table)
            if used:
                service.metadata.drop_all(engine)
                outbox.downgrade(self.urls[service.name], config=service.outbox)
        if not self.broker.startswith(("redis://", "rediss://", "unix://")):
            engine = sa.create_engine(self.broker)
            with engine.connect() as conn:
                used = sa.inspect(conn).has_table("outboxkit_alembic_version")
            engine.dispose()
            if used:
                outbox.downgrade(self.broker)

    # -- processes -------------------------------------------------------------------

    def _argv(self, kind: str, service: str) -> list[str]:
        spec = next(s for s in SERVICES if s.name == service)
        common = ["--db", self.urls[service], "--broker", self.broker, "--stream-prefix", self.prefix]
        if kind == "relay":
            return [
                "relay",
                *common,
                "--table",
                spec.outbox.table,
                "--poll-interval",
                "0.05",
                "--lease-ttl",
                "2",
            ]
        return ["consume", f"{REGISTRIES}:{service}", *common, "--group", spec.group, "--block", "0.2",
                "--lease-ttl", "2", "--retry-delay", "0.1"]  # fmt: skip

    def start(self, kind: str, service: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``outboxkit relay`` or ``outboxkit consume`` for ``service``; ``env`` adds variables."""
        name = f"{kind}-{service}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXKIT_")}
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environ.get("PYTHONPATH")]))
        environ.update(
            ORDER_SAGA_STYLE=self.style.value, ORDER_SAGA_STEP_TIMEOUT=str(self.step_timeout), **env
        )
        path = self.workdir / f"{name}.log"
        self._log_offsets[name] = path.stat().st_size if path.exists() else 0
        log = path.open("ab")
        argv = [sys.executable, "-m", "outboxkit", "--log-format", "json", *self._argv(kind, service)]
        self._restarts[name] = " ".join(["outboxkit", *_redacted(self._argv(kind, service))])
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=log, env=environ, cwd=REPO_ROOT)
        log.close()
        return self.procs[name]

    def start_all(self, env: dict[str, dict[str, str]] | None = None) -> None:
        """Both processes of every service; ``env`` maps a process name to extra variables."""
        for service in SERVICES:
            for kind in ("relay", "consume"):
                self.start(kind, service.name, **(env or {}).get(f"{kind}-{service.name}", {}))

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every relay has started and every consumer holds its partitions (read from the logs)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.ready(name) for name in self.procs):
                return
            self.check_alive()
            time.sleep(0.1)
        msg = f"the services did not start within {timeout:g}s; see the logs in {self.workdir}"
        raise TimeoutError(msg)

    def check_alive(self) -> None:
        """Raise :class:`ProcessExitedError` for the first process that is no longer running.

        A run waits on the databases; without this a dead consumer shows up
        only as a money check failing minutes later (#9).
        """
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ProcessExitedError(name, proc.returncode, self.log_path(name), self._restarts[name])

    def log_path(self, name: str) -> Path:
        """Where the process ``name`` (``relay-payment``, ``consume-order``, ...) writes its JSON log."""
        return self.workdir / f"{name}.log"

    def describe(self) -> list[str]:
        """One line per process: name, pid and log file."""
        return [
            f"{name:<17} pid {proc.pid:<7} log {self.log_path(name)}" for name, proc in self.procs.items()
        ]

    def ready(self, name: str) -> bool:
        """Whether the process ``name`` logged that it is up since it was last started."""
        marker = '"relay.rebalanced"' if name.startswith("relay") else '"inbox.partition_acquired"'
        text = (self.workdir / f"{name}.log").read_text(errors="replace")
        return marker in text[self._log_offsets.get(name, 0) :]

    def stop_all(self) -> None:
        """SIGTERM every process, then SIGKILL what is still running after 10 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for engine in self.engines.values():
            engine.dispose()

    # -- orders ----------------------------------------------------------------------

    def place(self, specs: Iterable[OrderSpec], pace: float = 0.1) -> None:
        """The order service's API: each order in its own transaction."""
        for spec in specs:
            with Session(self.engines[ORDER.name]) as session, session.begin():
                if self.style is Style.ORCHESTRATED:
                    place_order(session, self.orchestrator, spec)
                else:
                    deadline = dt.timedelta(seconds=self.step_timeout * 2)
                    place_order_choreographed(session, spec, deadline=deadline)
            time.sleep(pace)

    def wait(self, count: int, timeout: float = 60.0) -> bool:
        """Until ``count`` orders are decided and every message is handled (three quiet checks in a row).

        Raises:
            ProcessExitedError: a process died meanwhile (restart it with :meth:`start` first).
        """
        deadline, quiet = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            time.sleep(0.2)
            self.check_alive()
            rows = select_orders(self.engines[ORDER.name])
            decided = len(rows) == count and all(r.status != "pending" for r in rows)
            quiet = quiet + 1 if decided and self._settled() else 0
            if quiet >= 3:
                return True
        return False

    def _settled(self) -> bool:
        now = dt.datetime.now(dt.UTC)
        for service in SERVICES:
            o = outbox_tables(service.outbox).outbox
            query = sa.select(sa.func.count()).where(o.c.published_at.is_(None), o.c.available_at <= now)
            with self.engines[service.name].connect() as conn:
                if conn.execute(query).scalar():
                    return False
        return asyncio.run(self._groups_done())

    async def _groups_done(self) -> bool:
        layout = StreamLayout(prefix=self.prefix)
        subscriber = connect_subscriber(self.broker)
        try:
            for service, topics in _topics(self.style).items():
                group = next(s.group for s in SERVICES if s.name == service)
                for topic in topics:
                    for stream in layout.streams_of(topic):
                        status = await subscriber.group_status(stream, group)
                        if status is not None and (status.lag is None or status.lag > 0):
                            return False
        finally:
            await subscriber.aclose()
        return True

    # -- the verdict -----------------------------------------------------------------

    def check(self, count: int) -> list[Check]:
        """The consistency check, from the three databases."""
        return check_consistency(
            self.engines[ORDER.name],
            self.engines[INVENTORY.name],
            self.engines[PAYMENT.name],
            expected_orders=count,
            sagas=self.style is Style.ORCHESTRATED,
        )


def _redacted(argv: list[str]) -> list[str]:
    """``argv`` with passwords in URLs masked and values quoted where the shell needs it."""
    return [shlex.quote(outbox.redact_url(a) if "://" in a else a) for a in argv]


def _topics(style: Style) -> dict[str, list[str]]:
    """The topics each service consumes."""
    if style is Style.ORCHESTRATED:
        return {
            "order": [REPLY_TOPIC, TIMER_TOPIC],
            "inventory": [INVENTORY_COMMANDS],
            "payment": [PAYMENT_COMMANDS],
        }
    return {
        "order": [PAYMENT_EVENTS, INVENTORY_EVENTS, ORDER_DEADLINES],
        "inventory": [ORDER_EVENTS],
        "payment": [INVENTORY_EVENTS, ORDER_EVENTS],
    }
