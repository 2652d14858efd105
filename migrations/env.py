"""Alembic environment of outboxkit's own migration scripts.

Used by ``outboxkit migrate`` (and ``outbox.upgrade``): the version table is
``outboxkit_alembic_version`` so the application's ``alembic_version`` is never
touched. Applications that merge these scripts into their own history use their
own env.py instead; see docs/adopting.md.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.pool import NullPool

import brokers.sql_table.tables
import inbox.tables
import relay.tables
import saga.tables
from outbox import create_engine
from outbox import tables as outbox_tables
from outbox._migrate import VERSION_TABLE, migration_names

config = context.config
names = migration_names(config.attributes)
url = config.get_main_option("sqlalchemy.url")
assert url is not None  # noqa: S101 - set by outbox._migrate
# Every toolkit table, from the metadata each package owns (listed here, not
# filled by import side effects): what these scripts must create, so
# `alembic check` on this environment proves scripts and tables agree.
TOOLKIT_METADATA = (
    outbox_tables.metadata,
    brokers.sql_table.tables.metadata,
    relay.tables.metadata,
    inbox.tables.metadata,
    saga.tables.metadata,
)
opts: dict[str, Any] = {
    "target_metadata": TOOLKIT_METADATA,
    "version_table": VERSION_TABLE,
    "version_table_schema": names.schema,
    "render_as_batch": url.startswith("sqlite"),
}


def _run() -> None:
    with context.begin_transaction():
        if names.schema is not None:
            # The version table lives in the schema too, so the schema must
            # exist before Alembic creates it. The name is a validated plain
            # identifier (OutboxConfig), safe to interpolate.
            context.execute(f"CREATE SCHEMA IF NOT EXISTS {names.schema}")
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=url, literal_binds=True, **opts)
    _run()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **opts)
        _run()
    else:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                context.configure(connection=conn, **opts)
                _run()
        finally:
            engine.dispose()
