"""Put every toolkit table of a connection in the configured schema (``--schema``).

The outbox tables carry their schema in their ``Table`` objects; the relay,
SQL-broker, inbox and saga tables are module-level and unqualified, and the
handlers a consumer runs use the application's own unqualified tables on the
same connection. So rather than rewrite every statement, the toolkit's engines
put the schema *first* on each connection's ``search_path``: toolkit tables
resolve there, and the application's tables still resolve through the role's
own path behind it (SQLAlchemy documents this hook, "Setting Alternate Search
Paths on Connect"). SQLite has no schemas: a schema there is a ConfigError.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine

from .config import validate_identifier
from .errors import ConfigError

__all__ = ["check_schema_dialect", "use_schema"]

E = TypeVar("E", Engine, AsyncEngine)


def check_schema_dialect(dialect: str, schema: str | None) -> None:
    """Raise :class:`ConfigError` when ``schema`` is set for a SQLite database."""
    if schema is not None and dialect == "sqlite":
        msg = f"schema {schema!r} given for a SQLite database, which has no schemas: drop --schema"
        raise ConfigError(msg)


def use_schema(engine: E, schema: str | None) -> E:
    """Return ``engine`` with ``schema`` first on every new connection's ``search_path``.

    ``None`` leaves the engine as it is. Applying the same schema twice is a
    no-op. Call it before the engine's first connection: pooled connections
    opened earlier keep their path.

    Raises:
        ConfigError: the name is not a plain identifier, or the database is SQLite.

    .. versionadded:: 0.1
    """
    if schema is None:
        return engine
    validate_identifier(schema, what="schema name")
    check_schema_dialect(engine.dialect.name, schema)
    target = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    listener = _listener(schema)
    if not event.contains(target, "connect", listener):
        event.listen(target, "connect", listener, insert=True)
    return engine


@functools.cache
def _listener(schema: str) -> Callable[[object, object], None]:
    def prepend(dbapi_connection: object, connection_record: object) -> None:  # noqa: ARG001
        # autocommit: the SET must survive the pool's rollback on check-in.
        conn: Any = dbapi_connection  # psycopg's, or SQLAlchemy's adapter of the async one
        previous = conn.autocommit
        conn.autocommit = True
        cursor = conn.cursor()
        # The name is a validated plain identifier, safe to interpolate.
        cursor.execute(
            f"SELECT set_config('search_path', '{schema}, ' || current_setting('search_path'), false)"
        )
        cursor.close()
        conn.autocommit = previous

    return prepend
