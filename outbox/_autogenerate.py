"""Keep the toolkit's tables out of an application's Alembic autogenerate.

An application that merges the toolkit's revisions into its own history (path
B of docs/adopting.md) must not let autogenerate compare the toolkit's tables:
with only the application's metadata it proposes to drop them, and
``outbox.metadata`` holds only the tables of the packages imported so far.

The filter recognises the toolkit's tables by name instead of by metadata, so
this lowest layer needs no import of inbox, relay or saga: every table the
toolkit owns is named ``outboxkit_*`` (including its version table), except the
outbox and its dead-letter table, whose names come from ``OutboxConfig``.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Table

from .config import OutboxConfig

__all__ = ["IncludeObject", "autogenerate_filter", "is_toolkit_table"]

TOOLKIT_PREFIX = "outboxkit_"

IncludeObject = Callable[[object, str | None, str, bool, object | None], bool]
"""Alembic's ``include_object`` hook: ``(object, name, type_, reflected, compare_to) -> bool``."""


def is_toolkit_table(name: str, schema: str | None, config: OutboxConfig | None = None) -> bool:
    """Whether the table ``schema.name`` belongs to the toolkit named by ``config``."""
    names = config or OutboxConfig()
    if schema != names.schema:
        return False
    return name.startswith(TOOLKIT_PREFIX) or name in {names.table, f"{names.table}_dead_letter"}


def autogenerate_filter(
    config: OutboxConfig | None = None, *, include_object: IncludeObject | None = None
) -> IncludeObject:
    """Return an ``include_object`` hook that hides every toolkit table from autogenerate.

    Tables, and their columns, indexes and constraints, are skipped; anything
    else goes to ``include_object`` when given (the application's own hook),
    else is included. Pass the ``config`` whose names the application migrates.

    .. versionadded:: 0.1
    """

    def hook(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object | None) -> bool:
        table = obj if isinstance(obj, Table) else getattr(obj, "table", None)
        if isinstance(table, Table) and is_toolkit_table(table.name, table.schema, config):
            return False
        if include_object is None:
            return True
        return include_object(obj, name, type_, reflected, compare_to)

    return hook
