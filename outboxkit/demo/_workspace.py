"""Where a demo run keeps its data: SQLite files in a temporary directory, or databases on a server.

With no ``--db``, each service gets its own SQLite file and the broker is the
SQL-table broker in a fourth file. With ``--db postgresql+psycopg://.../postgres``
(a server URL), the run creates one database per service (and one for the SQL
broker unless ``--broker`` names another) and drops them afterwards unless
``--keep``. A Redis broker gets a stream prefix private to the run.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

import outbox
from outbox import ConfigError, OutboxError, StorageError, redact_url
from outboxkit.demo import SERVICES

__all__ = ["Workspace", "workspace"]

_REDIS = ("redis://", "rediss://", "unix://")
_KAFKA = ("kafka://", "kafka+ssl://")
_NATS = ("nats://", "tls://")


@dataclass(kw_only=True)
class Workspace:
    """The URLs of one run."""

    run_id: str
    directory: Path
    urls: dict[str, str]
    broker: str
    prefix: str
    created_databases: list[str] = field(default_factory=list)


def _sqlite(directory: Path, name: str) -> str:
    return f"sqlite:///{directory / f'{name}.db'}"


@contextmanager
def workspace(db: str | None, broker: str | None, *, keep: bool) -> Iterator[Workspace]:
    """Create the run's databases; remove them afterwards unless ``keep``."""
    run_id = secrets.token_hex(3)
    directory = Path(tempfile.mkdtemp(prefix="outboxkit-demo-"))
    ws = Workspace(run_id=run_id, directory=directory, urls={}, broker="", prefix=f"demo-{run_id}:")
    try:
        if db is None:
            ws.urls = {s.name: _sqlite(directory, s.name) for s in SERVICES}
        else:
            ws.urls = {s.name: _create_database(ws, db, s.name) for s in SERVICES}
        if broker is not None:
            ws.broker = broker
        elif db is None:
            ws.broker = _sqlite(directory, "broker")
        else:
            ws.broker = _create_database(ws, db, "broker")
        if ws.broker.startswith(_KAFKA):
            ws.prefix = f"demo-{run_id}."  # Kafka topic names have no ':'; its topics stay (retention)
        elif not ws.broker.startswith(_REDIS + _NATS):  # a SQL-table broker needs its tables
            outbox.upgrade(ws.broker)
        yield ws
    finally:
        if not keep:
            _clean(ws, db)


def _admin(server: str) -> sa.Engine:
    url = make_url(server)
    if not url.drivername.startswith("postgresql"):
        example = "postgresql+psycopg://user@host/postgres"
        msg = f"--db must be a PostgreSQL server URL ({example}), got {redact_url(server)}"
        raise ConfigError(msg)
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)


def _create_database(ws: Workspace, server: str, name: str) -> str:
    database = f"outboxkit_demo_{ws.run_id}_{name}"
    engine = _admin(server)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    except SQLAlchemyError as exc:
        msg = f"cannot create database {database} at {redact_url(server)}: {type(exc).__name__}"
        raise StorageError(msg) from exc
    finally:
        engine.dispose()
    ws.created_databases.append(database)
    return make_url(server).set(database=database).render_as_string(hide_password=False)


def _clean(ws: Workspace, server: str | None) -> None:
    shutil.rmtree(ws.directory, ignore_errors=True)
    if server is not None and ws.created_databases:
        engine = _admin(server)
        with suppress(SQLAlchemyError), engine.connect() as conn:
            for database in ws.created_databases:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        engine.dispose()
    if ws.broker.startswith(_NATS):
        _clean_nats(ws)
    if ws.broker.startswith(_REDIS):
        with suppress(redis.RedisError), redis.Redis.from_url(ws.broker) as client:
            keys = list(client.scan_iter(match=f"{ws.prefix}*", count=500))
            if keys:
                client.delete(*keys)


def _clean_nats(ws: Workspace) -> None:
    """Delete the run's JetStream streams (their names start with the run's prefix)."""
    from brokers.nats_jetstream import NatsJetStreamSubscriber  # noqa: PLC0415 - nats extra

    async def clean() -> None:
        subscriber = NatsJetStreamSubscriber.from_url(ws.broker)
        try:
            await subscriber.delete_streams(ws.prefix)
        finally:
            await subscriber.aclose()

    with suppress(OutboxError):
        asyncio.run(clean())
