"""``outboxkit migrate``: create, upgrade or remove the toolkit's tables."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import structlog
import typer

import outbox
from outbox import ConfigError, OutboxConfig

from ._context import DATABASE_URL_ENV
from ._options import DEFAULT_TABLE, DbOpt, SchemaOpt, TableOpt

log = structlog.get_logger(__name__)


class Action(StrEnum):
    """What ``migrate`` does."""

    upgrade = "upgrade"
    downgrade = "downgrade"
    current = "current"


def migrate(
    action: Annotated[
        Action, typer.Argument(help="upgrade (default), downgrade, or current.")
    ] = Action.upgrade,
    revision: Annotated[
        str | None,
        typer.Argument(
            help="Target revision: default 'heads' for upgrade; 'base' removes every toolkit table."
        ),
    ] = None,
    db: DbOpt = None,
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the DDL instead of running it (offline mode).")
    ] = False,
    table: TableOpt = DEFAULT_TABLE,
    schema: SchemaOpt = None,
    print_path: Annotated[
        bool,
        typer.Option(
            "--print-path",
            help=(
                "Print the directory of the Alembic scripts and exit"
                " (in alembic.ini: version_locations = ... outbox:_migrations/versions)."
            ),
        ),
    ] = False,
) -> None:
    """Create or upgrade the toolkit's tables (idempotent); `downgrade base` removes them."""
    if print_path:
        typer.echo(str(outbox.migrations_path()))
        return
    if not db:
        msg = f"no database URL: pass --db or set {DATABASE_URL_ENV}"
        raise ConfigError(msg)
    config = OutboxConfig(table=table, schema=schema)
    if action is Action.current:
        typer.echo(outbox.current_revision(db, config=config) or "none")
        return
    if action is Action.downgrade:
        if sql:
            msg = "--sql prints upgrade DDL only"
            raise ConfigError(msg)
        if revision is None:
            msg = "downgrade needs a target revision, e.g. `outboxkit migrate downgrade base`"
            raise ConfigError(msg)
        outbox.downgrade(db, revision=revision, config=config)
        log.info("migrate.downgraded", db=outbox.redact_url(db), revision=revision)
        return
    if sql:
        typer.echo(outbox.upgrade_sql(db, revision=revision or "heads", config=config), nl=False)
        return
    outbox.upgrade(db, revision=revision or "heads", config=config)
    log.info(
        "migrate.upgraded", db=outbox.redact_url(db), revision=outbox.current_revision(db, config=config)
    )
