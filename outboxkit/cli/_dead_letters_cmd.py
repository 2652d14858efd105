"""``outboxkit dead-letters list|retry|purge``: manage messages the broker kept rejecting."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
from typing import Annotated

import typer

from outbox import ConfigError, OutboxConfig
from outbox.tables import outbox_tables
from relay import DeadLetters, check_schema, make_engine

from ._context import DATABASE_URL_ENV
from ._options import DEFAULT_TABLE, DbOpt, SchemaOpt, TableOpt, require

app = typer.Typer(help="List, retry or purge dead letters.", no_args_is_help=True)

IdsArg = Annotated[
    list[int] | None, typer.Argument(help="Outbox ids (default: all matching).", show_default=False)
]
TopicOpt = Annotated[str | None, typer.Option("--topic", help="Only this topic.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; change nothing.")]


def _open(db: str | None, table: str, schema: str | None) -> DeadLetters:
    engine = make_engine(require(db, "--db", DATABASE_URL_ENV), schema=schema)
    tables = outbox_tables(OutboxConfig(table=table, schema=schema))
    check_schema(engine, tables)
    return DeadLetters(engine, tables)


@app.command("list")
def list_(
    db: DbOpt = None,
    table: TableOpt = DEFAULT_TABLE,
    schema: SchemaOpt = None,
    topic: TopicOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="Most rows to show.")] = 100,
    include_retried: Annotated[
        bool, typer.Option("--all", help="Include dead letters already retried.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List dead letters, oldest id first, with their last error."""
    rows = _open(db, table, schema).select(topic=topic, limit=limit, include_retried=include_retried)
    for row in rows:
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "id": row.id,
                        "message_id": row.message_id,
                        "topic": row.topic,
                        "key": row.key,
                        "attempts": row.attempts,
                        "last_error": row.last_error,
                        "dead_lettered_at": row.dead_lettered_at.isoformat(),
                        "retried_at": row.retried_at.isoformat() if row.retried_at else None,
                        "retried_by": row.retried_by,
                    }
                )
            )
        else:
            retried = f" retried_by={row.retried_by}" if row.retried_at else ""
            typer.echo(
                f"{row.id}\t{row.message_id}\t{row.topic}\tkey={row.key}\tattempts={row.attempts}"
                f"\t{(row.last_error or '').splitlines()[0][:200] if row.last_error else ''}{retried}"
            )
    if not rows and not as_json:
        typer.echo("no dead letters", err=True)


def who_am_i() -> str:
    """``user@host``: who an operator action is recorded as, unless ``--by`` says."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@app.command("retry")
def retry(
    ids: IdsArg = None,
    db: DbOpt = None,
    table: TableOpt = DEFAULT_TABLE,
    schema: SchemaOpt = None,
    topic: TopicOpt = None,
    dry_run: DryRunOpt = False,
    every: Annotated[
        bool, typer.Option("--all", help="Retry every dead letter (required without ids/--topic).")
    ] = False,
    by: Annotated[
        str | None, typer.Option("--by", help="Recorded as retried_by (default user@host).")
    ] = None,
) -> None:
    """Put dead letters back under their original ids: relayed before later rows of their key."""
    if not ids and topic is None and not every:
        msg = "name the dead letters to retry: ids, --topic, or --all"
        raise ConfigError(msg)
    done = _open(db, table, schema).retry(ids=ids, topic=topic, by=by or who_am_i(), dry_run=dry_run)
    verb = "would retry" if dry_run else "retried"
    typer.echo(f"{verb} {len(done)} dead letter(s){': ' + ' '.join(map(str, done)) if done else ''}")


@app.command("purge")
def purge(
    ids: IdsArg = None,
    db: DbOpt = None,
    table: TableOpt = DEFAULT_TABLE,
    schema: SchemaOpt = None,
    topic: TopicOpt = None,
    older_than: Annotated[
        float | None, typer.Option("--older-than", help="Only dead letters older than this many seconds.")
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Purge every dead letter (required without filters).")
    ] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Delete dead letters for good."""
    if not ids and topic is None and older_than is None and not every:
        msg = "name the dead letters to purge: ids, --topic, --older-than, or --all"
        raise ConfigError(msg)
    age = dt.timedelta(seconds=older_than) if older_than is not None else None
    count = _open(db, table, schema).purge(ids=ids, topic=topic, older_than=age, dry_run=dry_run)
    typer.echo(f"{'would purge' if dry_run else 'purged'} {count} dead letter(s)")
