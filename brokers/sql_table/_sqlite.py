"""SQLite connection settings for concurrent processes: WAL and a busy timeout."""

from __future__ import annotations

import sqlite3

from sqlalchemy import Engine, event

__all__ = ["configure_sqlite"]

BUSY_TIMEOUT_MS = 10_000


def configure_sqlite(engine: Engine) -> None:
    """WAL lets readers run beside the writer; the busy timeout makes writers queue, not fail."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()
