"""Table definitions of the write side.

The outbox table holds one row per published message until the relay has put
it on the broker. Columns the relay needs are here from the start: a monotonic
``id`` for order, ``key`` and ``key_hash`` for per-key order and partitioning,
``attempts``/``next_attempt_at``/``last_error`` for retries with backoff, and
``published_at`` for rows kept after publishing (audit and replay window).

``metadata`` holds these two tables under their default names, and nothing
else: every package owns the ``metadata`` of its own tables (``inbox.tables``,
``relay.tables``, ``saga.tables``, ``brokers.sql_table.tables``) instead of
adding them here on import, so what a ``MetaData`` holds never depends on
what a process happened to import. :func:`outbox_tables` builds the same
tables under the names of an :class:`~outbox.config.OutboxConfig`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    cast,
    text,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from .config import DEFAULT_TABLE, OutboxConfig

__all__ = [
    "NAMING_CONVENTION",
    "JSONText",
    "OutboxTables",
    "metadata",
    "outbox_tables",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""The outbox and dead-letter tables under their default names (apps use ``autogenerate_filter``)."""

# Integer on SQLite so the id is the rowid alias (autoincrementing); BIGINT
# identity elsewhere.
_ID = BigInteger().with_variant(Integer, "sqlite")


class JSONText(TypeDecorator[str]):
    """JSON stored as ``jsonb`` on PostgreSQL and as text elsewhere, bound as text.

    The value is the JSON *text* produced by the configured serializer, passed
    through unchanged: no second encoding in the driver, and the serializer's
    checks are the only ones that apply.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[str]:
        """Use ``jsonb`` on PostgreSQL and text elsewhere."""
        if dialect.name == "postgresql":
            return dialect.type_descriptor(_RawJSONB())  # type: ignore[arg-type]
        return dialect.type_descriptor(Text())

    def bind_expression(self, bindvalue: BindParameter[str]) -> ColumnElement[str]:
        """Bind the JSON text as text and let the database parse it: ``CAST(:v AS JSONB)``.

        Without this the psycopg dialect wraps the value in ``Jsonb(...)`` and
        PostgreSQL stores a JSON *string* holding the document's text.
        """
        return cast(type_coerce(bindvalue, Text()), self)


class _RawJSONB(JSONB):
    """``jsonb`` whose bound values are already JSON text."""

    def bind_processor(self, dialect: Dialect) -> None:  # noqa: ARG002
        return None

    def result_processor(self, dialect: Dialect, coltype: object) -> None:  # noqa: ARG002
        return None


class OutboxTables(NamedTuple):
    """The outbox table and its dead-letter table."""

    outbox: Table
    dead_letter: Table


def _message_columns() -> list[Column[object]]:
    return [
        Column("message_id", Uuid(), nullable=False, unique=True),
        Column("topic", String(249), nullable=False),
        Column("key", Text(), nullable=True),
        Column("key_hash", BigInteger(), nullable=False),
        Column("type", String(255), nullable=False),
        Column("source", String(255), nullable=False),
        Column("headers", JSONText(), nullable=False),
        Column("payload", JSONText(), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("available_at", DateTime(timezone=True), nullable=False),
        Column("attempts", Integer(), nullable=False, server_default=text("0")),
        Column("last_error", Text(), nullable=True),
    ]


def _build(meta: MetaData, table: str, schema: str | None) -> OutboxTables:
    outbox = Table(
        table,
        meta,
        Column("id", _ID, Identity(), primary_key=True),
        *_message_columns(),
        Column("next_attempt_at", DateTime(timezone=True), nullable=True),
        Column("published_at", DateTime(timezone=True), nullable=True),
        schema=schema,
        # AUTOINCREMENT: ids are never reused on SQLite, so a dead letter can
        # go back under its original id and order stays monotonic.
        sqlite_autoincrement=True,
    )
    # The relay claims unpublished rows in id order: a partial index keeps
    # that scan proportional to the backlog, not to the rows kept for replay.
    Index(
        f"ix_{table}_pending",
        outbox.c.id,
        postgresql_where=outbox.c.published_at.is_(None),
        sqlite_where=outbox.c.published_at.is_(None),
    )
    # Keys parked in backoff are looked up on every claim.
    Index(
        f"ix_{table}_retry",
        outbox.c.next_attempt_at,
        postgresql_where=outbox.c.next_attempt_at.is_not(None),
        sqlite_where=outbox.c.next_attempt_at.is_not(None),
    )
    # Retention deletes published rows by age.
    Index(
        f"ix_{table}_published",
        outbox.c.published_at,
        postgresql_where=outbox.c.published_at.is_not(None),
        sqlite_where=outbox.c.published_at.is_not(None),
    )
    dead_letter = Table(
        f"{table}_dead_letter",
        meta,
        # The original outbox id: a retried message goes back with it, so it
        # is relayed before later messages of its key.
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
        *_message_columns(),
        Column("dead_lettered_at", DateTime(timezone=True), nullable=False),
        Column("retried_at", DateTime(timezone=True), nullable=True),
        Column("retried_by", String(255), nullable=True),
        schema=schema,
    )
    return OutboxTables(outbox, dead_letter)


_DEFAULT = _build(metadata, DEFAULT_TABLE, None)


@functools.lru_cache(maxsize=64)
def _cached(table: str, schema: str | None) -> OutboxTables:
    return _build(MetaData(naming_convention=NAMING_CONVENTION), table, schema)


def outbox_tables(config: OutboxConfig | None = None) -> OutboxTables:
    """Return the outbox tables named by ``config`` (default names when ``None``)."""
    if config is None or (config.table == DEFAULT_TABLE and config.schema is None):
        return _DEFAULT
    return _cached(config.table, config.schema)
