"""The shop's Alembic environment: its own metadata, the toolkit's tables left to the toolkit."""

from __future__ import annotations

import os

from alembic import context
from shop.models import metadata as shop_metadata
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

import outbox

config = context.config
url = os.environ.get("SHOP_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
assert url is not None

engine = create_engine(url, poolclass=NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=shop_metadata,
        # outboxkit: autogenerate never compares (so never drops) the toolkit's tables.
        include_object=outbox.autogenerate_filter(),
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
