"""Creating the services' databases: the toolkit's tables (one outbox per service) and the business tables."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import sqlalchemy as sa

import outbox

from ._tables import SERVICES, demo_stock

__all__ = ["Style", "prepare_databases", "seed_stock"]


class Style(enum.StrEnum):
    """How the saga is coordinated."""

    ORCHESTRATED = "orchestrated"
    CHOREOGRAPHED = "choreographed"


def prepare_databases(urls: Mapping[str, str]) -> None:
    """Migrate each service's database (``urls`` by service name) and create its business tables.

    A database that also holds the SQL-table broker (the embedded default
    shares nothing: each service has its own file) gets those tables from the
    same migration.
    """
    for service in SERVICES:
        url = urls[service.name]
        outbox.upgrade(url, config=service.outbox)
        engine = sa.create_engine(url)
        try:
            service.metadata.create_all(engine)
        finally:
            engine.dispose()


def seed_stock(engine: sa.Engine, stock: Mapping[str, int]) -> None:
    """Put ``stock`` (units by SKU) on the inventory service's shelves (``INVENTORY``'s database)."""
    with engine.begin() as conn:
        conn.execute(sa.delete(demo_stock))
        conn.execute(
            sa.insert(demo_stock), [{"sku": s, "initial": n, "available": n} for s, n in stock.items()]
        )
