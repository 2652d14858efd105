"""The shop's Alembic environment: its own version table, both metadatas for autogenerate."""

from __future__ import annotations

from alembic import context
from shop.models import metadata as shop_metadata
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

import outbox

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
# outboxkit: autogenerate knows the toolkit's tables, so it never proposes to drop them.
target_metadata = [shop_metadata, outbox.metadata]

engine = create_engine(url, poolclass=NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
