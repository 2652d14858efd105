"""Engine creation, schema checks and driver-error conversion for the relay.

Every database error the relay sees passes through :func:`storage_error`, the
one boundary where driver exceptions become :class:`~outbox.errors.StorageError`
(with the URL's password masked).
"""

from __future__ import annotations

from sqlalchemy import Engine, inspect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from outbox import (
    SchemaMissingError,
    StorageError,
    create_engine,
    is_missing_table,
    redact_url,
    sync_url,
    tables_missing,
)
from outbox._dberrors import driver_reason
from outbox.errors import MIGRATE_HINT
from outbox.tables import OutboxTables

from .tables import relay_lease, relay_member, relay_state

__all__ = ["check_schema", "make_engine", "storage_error"]


def make_engine(url: str, *, schema: str | None = None) -> Engine:
    """A sync engine for ``url`` that survives server restarts (invalidated on disconnect, recycled).

    ``schema``: the toolkit's tables live there (see :func:`outbox.use_schema`).
    """
    if sync_url(url).get_backend_name() == "sqlite":
        # SQLite's lock wait and WAL come from the one factory (outbox._engine).
        return create_engine(url, schema=schema)
    # No pre-ping (a round trip per checkout): a connection that fails with a
    # disconnect error is invalidated by SQLAlchemy and the loop retries.
    return create_engine(url, schema=schema, pool_size=3, max_overflow=2, pool_recycle=1800)


def storage_error(exc: SQLAlchemyError, engine: Engine) -> StorageError:
    """Convert a driver error to :class:`StorageError` with a safe message."""
    where = redact_url(engine.url)
    orig = getattr(exc, "orig", None) or exc
    if is_missing_table(exc):
        return tables_missing("a table of the outbox or the relay", where)
    return StorageError(
        f"database {where} failed: {type(orig).__name__}: {_mask(driver_reason(exc), engine)}"
    )


def _mask(text: str, engine: Engine) -> str:
    password = engine.url.password
    return text.replace(str(password), "***") if password else text


def check_schema(engine: Engine, tables: OutboxTables) -> None:
    """Raise :class:`SchemaMissingError` unless the outbox and relay tables exist."""
    try:
        with engine.connect() as conn:
            inspector = inspect(conn)
            needed = [(t.name, t.schema) for t in (tables.outbox, tables.dead_letter)]
            needed += [(t.name, tables.outbox.schema) for t in (relay_lease, relay_member, relay_state)]
            missing = [name for name, schema in needed if not inspector.has_table(name, schema=schema)]
    except DBAPIError as exc:
        raise storage_error(exc, engine) from None
    if missing:
        msg = (
            f"table {missing[0]!r} is missing in {redact_url(engine.url)}:"
            f" upgrade to the latest revision: {MIGRATE_HINT}"
        )
        raise SchemaMissingError(msg)
