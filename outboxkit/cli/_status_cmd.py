"""``outboxkit status``: backlog, oldest age, why rows wait, dead letters and relays."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Annotated

import typer
from sqlalchemy import Connection, inspect
from sqlalchemy.exc import SQLAlchemyError

from brokers import GroupStatus, connect_publisher
from inbox import consumer_group_status, count_dead_letters, inbox_dead_letter
from outbox import OutboxConfig, OutboxError, SchemaMissingError, redact_url
from outbox.tables import outbox_tables
from relay import (
    OPEN_TX_AGE_S,
    Backlog,
    check_schema,
    make_engine,
    read_backlog,
    read_open_transactions,
    storage_error,
)
from saga import SagaCount, count_sagas

from ._context import DATABASE_URL_ENV
from ._options import (
    DEFAULT_STREAM_PREFIX,
    DEFAULT_TABLE,
    BrokerOpt,
    DbOpt,
    SchemaOpt,
    StreamPrefixOpt,
    TableOpt,
    require,
)

# Schema version of `status --json`: bumped when a field changes meaning or goes away.
STATUS_JSON_VERSION = 1
# Exit status when the broker named by --broker cannot be reached (monitoring scripts rely on it).
EXIT_BROKER_UNREACHABLE = 1


def status(
    db: DbOpt = None,
    broker: BrokerOpt = None,
    table: TableOpt = DEFAULT_TABLE,
    schema: SchemaOpt = None,
    stream_prefix: StreamPrefixOpt = DEFAULT_STREAM_PREFIX,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print the backlog and why rows wait, dead letters, relays, consumer groups' lag and sagas."""
    engine = make_engine(require(db, "--db", DATABASE_URL_ENV), schema=schema)
    tables = outbox_tables(OutboxConfig(table=table, schema=schema))
    check_schema(engine, tables)
    try:
        with engine.connect() as conn:
            backlog = read_backlog(conn, tables, now=dt.datetime.now(dt.UTC))
            open_tx = _open_transactions(conn)
            sagas = _sagas(conn)
            consumer_dead = _consumer_dead_letters(conn)
    except SQLAlchemyError as exc:
        raise storage_error(exc, engine) from None
    finally:
        engine.dispose()
    reach = broker_reachable(broker) if broker else None
    groups = _groups(broker, stream_prefix, schema) if broker and reach and reach[0] else []
    if as_json:
        report = {"version": STATUS_JSON_VERSION} | dataclasses.asdict(backlog)
        report["consumer_dead_letters_by_group"] = consumer_dead
        report["open_transactions"] = open_tx
        report["consumer_groups"] = [dataclasses.asdict(g) | {"lag": g.lag} for g in groups]
        report["sagas"] = [{"type": c.type, "state": str(c.state), "count": c.count} for c in sagas]
        if reach is not None:
            report["broker"] = {"url": redact_url(broker), "reachable": reach[0], "error": reach[1]}
        typer.echo(json.dumps(report, sort_keys=True, default=str))
    else:
        _print(backlog, open_tx)
        _print_consumer_dead_letters(consumer_dead)
        if reach is not None:
            state = "reachable" if reach[0] else f"UNREACHABLE ({reach[1]})"
            typer.echo(f"broker {redact_url(broker)}: {state}")
        _print_groups(groups)
        _print_sagas(sagas)
    if reach is not None and not reach[0]:
        raise typer.Exit(EXIT_BROKER_UNREACHABLE)


def _open_transactions(conn: Connection) -> dict[str, float | int] | None:
    found = read_open_transactions(conn)
    return None if found is None else {"count": found[0], "oldest_s": round(found[1], 1)}


def _sagas(conn: Connection) -> list[SagaCount]:
    try:
        return count_sagas(conn)
    except SchemaMissingError:
        return []  # a service that runs no saga


def _consumer_dead_letters(conn: Connection) -> dict[str, int]:
    if not inspect(conn).has_table(inbox_dead_letter.name, schema=inbox_dead_letter.schema):
        return {}  # a service that consumes nothing
    return count_dead_letters(conn)


def _print_consumer_dead_letters(counts: dict[str, int]) -> None:
    typer.echo(f"consumer dead letters: {sum(counts.values())}")
    for group, count in sorted(counts.items()):
        typer.echo(f"  consumer dead letters {group}: {count}")


def _groups(broker: str, prefix: str, schema: str | None) -> list[GroupStatus]:
    try:
        return consumer_group_status(broker, prefix=prefix, schema=schema)
    except OutboxError:
        return []


def _print_groups(groups: list[GroupStatus]) -> None:
    if not groups:
        return
    typer.echo("consumer groups:")
    for g in groups:
        behind = "?" if g.behind is None else g.behind
        typer.echo(f"  {g.stream} / {g.group}: lag {g.lag} (pending {g.pending}, behind {behind})")


def _print_sagas(sagas: list[SagaCount]) -> None:
    if not sagas:
        return
    typer.echo("sagas:")
    for c in sagas:
        typer.echo(f"  {c.type}: {c.state} {c.count}")


def broker_reachable(url: str) -> tuple[bool, str | None]:
    """Ping the broker without writing anything (:meth:`brokers.Publisher.ping`): reachable, else why not."""
    publisher = connect_publisher(url)
    try:
        publisher.ping()
    except OutboxError as exc:
        return False, str(exc)
    finally:
        publisher.close()
    return True, None


def _print(b: Backlog, open_tx: dict[str, float | int] | None) -> None:
    age = "-" if b.oldest_age_s is None else f"{b.oldest_age_s:.1f}s"
    typer.echo(f"backlog: {b.pending} rows unpublished, oldest {age}")
    typer.echo(
        f"  due now: {b.due}; delayed: {b.delayed}; in retry backoff: {b.in_backoff};"
        f" waiting behind a parked key: {b.behind_parked_key}"
    )
    if open_tx is not None:
        typer.echo(
            f"  transactions open over {OPEN_TX_AGE_S}s: {open_tx['count']} (oldest {open_tx['oldest_s']}s);"
            " their rows appear when they commit, nothing else waits behind them"
        )
    typer.echo(f"kept for the replay window: {b.kept_published} rows")
    for topic, count in sorted(b.pending_by_topic.items()):
        typer.echo(f"  pending {topic}: {count}")
    total = sum(b.dead_letters_by_topic.values())
    typer.echo(f"relay dead letters: {total}")
    for topic, count in sorted(b.dead_letters_by_topic.items()):
        typer.echo(f"  relay dead letters {topic}: {count}")
    _print_parked_keys(b.parked_keys)
    typer.echo(f"relays: {sum(1 for r in b.relays if r['alive'])} alive")
    for r in b.relays:
        state = ("alive" if r["alive"] else "gone") + (", idle" if r["idle"] else "")
        typer.echo(f"  {r['relay_id']} ({state}) partitions={r['partitions']} heartbeat={r['heartbeat_at']}")


def _print_parked_keys(keys: list[str]) -> None:
    """Keys whose later rows wait behind a dead letter (``--on-dead-letter park-key``), issue #9."""
    if keys:
        typer.echo(f"parked keys (waiting for `dead-letters retry|purge`): {', '.join(keys)}")
