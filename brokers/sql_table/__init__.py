"""SQL-table broker (the embedded default): streams as rows in any SQLAlchemy database.

The publish half (relay, sync engine) and the subscribe half (consumers,
asyncio engine) share the tables in :mod:`brokers.sql_table.tables`. The URL
helpers and the SQLite settings are exported because the consumer opens its own
inbox database with the same drivers and settings.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._publish import SqlTablePublisher
from ._sqlite import configure_sqlite
from ._subscribe import DEFAULT_POLL_INTERVAL, SqlTableSubscriber
from ._urls import async_url, sync_url

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "SqlTablePublisher",
    "SqlTableSubscriber",
    "async_url",
    "configure_sqlite",
    "sync_url",
]
