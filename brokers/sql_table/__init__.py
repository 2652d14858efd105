"""SQL-table broker (the embedded default): streams as rows in any SQLAlchemy database.

The publish half (relay, sync engine) and the subscribe half (consumers,
asyncio engine) share the tables in :mod:`brokers.sql_table.tables`. Both open
their engines through :func:`outbox.create_engine` /
:func:`outbox.create_async_engine`, the one place that decides the drivers and
the SQLite settings.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._publish import SqlTablePublisher
from ._subscribe import DEFAULT_POLL_INTERVAL, SqlTableSubscriber

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "SqlTablePublisher",
    "SqlTableSubscriber",
]
