"""SQLAlchemy URLs for the sync and asyncio drivers of one database."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from outbox._redact import redact_url
from outbox.errors import ConfigError

__all__ = ["async_url", "sync_url"]

_ASYNC = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
_SYNC = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


def _parse(url: str | URL) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        msg = f"invalid database URL {redact_url(url)}"
        raise ConfigError(msg) from None


def async_url(url: str | URL) -> URL:
    """The asyncio-driver form of ``url`` (aiosqlite, psycopg async); other drivers unchanged."""
    parsed = _parse(url)
    driver = _ASYNC.get(parsed.get_backend_name())
    return parsed.set(drivername=driver) if driver else parsed


def sync_url(url: str | URL) -> URL:
    """The sync-driver form of ``url`` (pysqlite, psycopg); other drivers unchanged."""
    parsed = _parse(url)
    driver = _SYNC.get(parsed.get_backend_name())
    return parsed.set(drivername=driver) if driver else parsed
