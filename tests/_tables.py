"""Every toolkit table, from the metadata each package owns (no import side effects, #10)."""

from __future__ import annotations

from sqlalchemy import Engine, MetaData

import brokers.sql_table.tables
import inbox.tables
import outbox
import relay.tables
import saga.tables

TOOLKIT_METADATA: tuple[MetaData, ...] = (
    outbox.metadata,
    brokers.sql_table.tables.metadata,
    relay.tables.metadata,
    inbox.tables.metadata,
    saga.tables.metadata,
)
"""The same list migrations/env.py gives Alembic as ``target_metadata``."""


def create_toolkit_tables(engine: Engine) -> None:
    """``create_all`` for every toolkit table (tests that skip the migrations)."""
    for metadata in TOOLKIT_METADATA:
        metadata.create_all(engine)
