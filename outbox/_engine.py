"""The one engine factory: every engine the toolkit opens is built here.

Before this module there were five copies with different SQLite settings (a
30 s lock wait in the relay, 10 s plus WAL in the consumer and the SQL-table
broker, nothing at all in the command line's saga and migrate engines), so the
same file behaved differently depending on which process opened it. The
settings are now decided once, in :func:`_configure_sqlite`.

The factory also picks the driver (psycopg 3 for PostgreSQL, pysqlite or
aiosqlite for SQLite), turns a URL SQLAlchemy cannot use into one
:class:`~outbox.errors.ConfigError` without its password, and applies the
toolkit's schema (:func:`outbox.use_schema`).
"""

from __future__ import annotations

import datetime as dt
import sqlite3

import sqlalchemy
from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext import asyncio as sa_asyncio

from ._redact import redact_url
from ._schema import use_schema
from ._urls import invalid_database_url
from .errors import ConfigError

__all__ = ["SQLITE_BUSY_TIMEOUT", "async_url", "create_async_engine", "create_engine", "sync_url"]

SQLITE_BUSY_TIMEOUT = dt.timedelta(seconds=30)
"""How long a SQLite writer waits for another process's lock before failing.

The relay, the consumer and the application write the same file; a writer
that waits is better than one that fails and retries. 30 s is the longest of
the former copies, so no process fails sooner than it used to.
"""

_ASYNC = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
_SYNC = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


def _parse(url: str | URL) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        msg = f"invalid database URL {redact_url(url)}"
        raise ConfigError(msg) from None


def async_url(url: str | URL) -> URL:
    """The asyncio-driver form of ``url`` (aiosqlite, psycopg async); other drivers unchanged.

    .. versionadded:: 0.1
    """
    parsed = _parse(url)
    driver = _ASYNC.get(parsed.get_backend_name())
    return parsed.set(drivername=driver) if driver else parsed


def sync_url(url: str | URL) -> URL:
    """The sync-driver form of ``url`` (pysqlite, psycopg); other drivers unchanged.

    .. versionadded:: 0.1
    """
    parsed = _parse(url)
    driver = _SYNC.get(parsed.get_backend_name())
    return parsed.set(drivername=driver) if driver else parsed


def create_engine(url: str | URL, *, schema: str | None = None, **options: object) -> Engine:
    """A sync engine for ``url`` with the toolkit's settings.

    ``schema``: the toolkit's tables live there (PostgreSQL; see
    :func:`outbox.use_schema`). ``options`` go to :func:`sqlalchemy.create_engine`
    unchanged (pool size, ``poolclass``, ``pool_pre_ping`` …). On SQLite every
    connection gets WAL and a busy timeout of :data:`SQLITE_BUSY_TIMEOUT`;
    foreign keys are left unenforced, as SQLite ships them.

    Raises:
        ConfigError: SQLAlchemy cannot use the URL (the message names the fix,
            never the password), or ``schema`` is set for SQLite.

    .. versionadded:: 0.1
    """
    target = sync_url(url)
    try:
        engine = sqlalchemy.create_engine(target, **options)
    except (ArgumentError, NoSuchModuleError, ValueError, ImportError) as exc:
        raise invalid_database_url(url, exc) from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return use_schema(engine, schema)


def create_async_engine(
    url: str | URL, *, schema: str | None = None, **options: object
) -> sa_asyncio.AsyncEngine:
    """The asyncio twin of :func:`create_engine` (aiosqlite, psycopg async), with the same settings.

    .. versionadded:: 0.1
    """
    target = async_url(url)
    try:
        engine = sa_asyncio.create_async_engine(target, **options)
    except (ArgumentError, NoSuchModuleError, ValueError, ImportError) as exc:
        raise invalid_database_url(url, exc) from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine.sync_engine)
    return use_schema(engine, schema)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        # Writers queue behind another process's lock instead of failing at once.
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT.total_seconds() * 1000)}")
        # Readers (status, consumers polling the SQL broker) run beside the writer.
        cursor.execute("PRAGMA journal_mode = WAL")
        # Foreign keys stay as SQLite ships them (not enforced), on purpose: a
        # consumer's handlers run the application's own statements on this
        # connection, and with enforcement on, the DROP TABLE of an Alembic
        # batch migration becomes a DELETE that cascades (sqlite.org/foreignkeys.html,
        # section 5). The toolkit deletes child rows itself (saga retention).
        cursor.close()
