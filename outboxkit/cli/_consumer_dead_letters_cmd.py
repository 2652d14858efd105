"""``outboxkit consumer-dead-letters list|retry|purge``: messages a consumer gave up on.

Consumer dead letters live in the consumer's own database
(``outboxkit_inbox_dead_letter``) with the raw entry and the last error. Retry
runs the message through its handler again, idempotently (the inbox still
guards it), in one transaction with marking the dead letter retried.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

import inbox
from outbox import ConfigError, OutboxError
from relay import make_engine, storage_error

from ._consume_cmd import load_registry
from ._context import DATABASE_URL_ENV
from ._options import DbOpt, GroupOpt, SchemaOpt, require

app = typer.Typer(help="List, retry or purge consumer dead letters.", no_args_is_help=True)


def _engine(db: str | None, schema: str | None) -> Engine:
    return make_engine(require(db, "--db", DATABASE_URL_ENV), schema=schema)


@app.command("list")
def list_(
    db: DbOpt = None,
    schema: SchemaOpt = None,
    group: GroupOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="Most rows to show.")] = 100,
    include_retried: Annotated[
        bool, typer.Option("--all", help="Include dead letters already retried.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List dead letters not retried yet (--all: retried ones too), oldest first, with their error.

    --db is the Database URL of the consumer (its inbox and dead letters), as given to `consume`.
    """
    engine = _engine(db, schema)
    try:
        letters = inbox.select_dead_letters(
            engine, consumer=group, limit=limit, include_retried=include_retried
        )
    except SQLAlchemyError as exc:
        raise storage_error(exc, engine) from None
    finally:
        engine.dispose()
    for d in letters:
        if as_json:
            row = {
                "id": d.id, "consumer": d.consumer, "stream": d.stream, "entry_id": d.entry_id,
                "message_id": d.message_id, "topic": d.topic, "key": d.key, "deliveries": d.deliveries,
                "error": d.error, "dead_lettered_at": d.dead_lettered_at.isoformat(),
                "retried_at": d.retried_at.isoformat() if d.retried_at else None,
            }  # fmt: skip
            typer.echo(json.dumps(row))
        else:
            error = d.error.splitlines()[0] if d.error else ""
            retried = f"\tretried_at={d.retried_at.isoformat()}" if d.retried_at else ""
            typer.echo(
                f"{d.id}\t{d.consumer}\t{d.topic or '-'}\tkey={d.key or '-'}\t{d.message_id or '-'}"
                f"\t{d.deliveries}x\t{error}{retried}"
            )
    if not as_json:
        typer.echo(f"{len(letters)} dead letter(s)", err=True)


def _registry_and_ids(args: list[str], handlers: str | None) -> tuple[str, list[int]]:
    """Split ``REGISTRY ID...`` (as ``consume`` takes its registry) or the deprecated ``--handlers``."""
    if handlers is not None:
        # Kept so scripts written against 0.1 keep working; one way is documented.
        typer.echo(
            "warning: --handlers is deprecated: give the registry first, as to `consume`:"
            f" consumer-dead-letters retry {handlers} ID...",
            err=True,
        )
        target, raw_ids = handlers, args
    elif args and ":" in args[0]:
        target, raw_ids = args[0], args[1:]
    else:
        msg = (
            "retry needs the handlers first, as given to `consume`:"
            " consumer-dead-letters retry package.module:registry ID..."
        )
        raise ConfigError(msg)
    if not raw_ids:
        msg = "retry needs at least one dead letter id (from `consumer-dead-letters list`)"
        raise ConfigError(msg)
    bad = [raw for raw in raw_ids if not raw.isdigit()]
    if bad:
        msg = f"dead letter ids are whole numbers (from `consumer-dead-letters list`), got {bad[0]!r}"
        raise ConfigError(msg)
    return target, [int(raw) for raw in raw_ids]


@app.command("retry")
def retry(
    args: Annotated[
        list[str],
        typer.Argument(
            help="The handlers (package.module:registry, as to `consume`), then dead letter ids.",
            metavar="REGISTRY ID...",
        ),
    ],
    handlers: Annotated[
        str | None,
        typer.Option(
            "--handlers", help="Deprecated: give the registry as the first argument, as to `consume`."
        ),
    ] = None,
    db: DbOpt = None,
    schema: SchemaOpt = None,
) -> None:
    """Run each dead letter through its handler again; on success it is marked retried."""
    target, ids = _registry_and_ids(args, handlers)
    registry = load_registry(target)
    engine = _engine(db, schema)
    failed = 0
    try:
        for dead_letter_id in ids:
            try:
                outcome = inbox.retry_dead_letter(engine, registry, dead_letter_id)
            except (OutboxError, SQLAlchemyError) as exc:
                raise exc if isinstance(exc, OutboxError) else storage_error(exc, engine) from None
            except Exception as exc:  # noqa: BLE001 - the handler failed again: report, keep the letter
                failed += 1
                typer.echo(f"{dead_letter_id}\tfailed again: {type(exc).__name__}: {exc}")
                continue
            typer.echo(f"{dead_letter_id}\t{outcome.value}")
    finally:
        engine.dispose()
    if failed:
        raise typer.Exit(1)


@app.command("purge")
def purge(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Dead letter ids (default: all of --group).")
    ] = None,
    db: DbOpt = None,
    schema: SchemaOpt = None,
    group: GroupOpt = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Really delete every dead letter (no ids, no group).")
    ] = False,
) -> None:
    """Delete dead letters for good."""
    if not ids and group is None and not yes:
        msg = "purge without ids or --group deletes every consumer dead letter: add --yes"
        raise ConfigError(msg)
    engine = _engine(db, schema)
    try:
        count = inbox.purge_dead_letters(engine, consumer=group, ids=ids or None)
    except SQLAlchemyError as exc:
        raise storage_error(exc, engine) from None
    finally:
        engine.dispose()
    typer.echo(f"purged {count} dead letter(s)")
