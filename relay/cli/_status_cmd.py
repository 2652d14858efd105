"""``outboxkit status``: backlog, oldest age, why rows wait, dead letters and relays."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Annotated

import typer
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from outbox import OutboxConfig, OutboxError, redact_url
from outbox.brokers import connect_publisher
from outbox.brokers.redis_streams_publish import RedisStreamsPublisher
from outbox.tables import outbox_tables
from relay._db import check_schema, make_engine, storage_error
from relay._status import Backlog, read_backlog

from ._context import DATABASE_URL_ENV
from ._options import BrokerOpt, DbOpt, SchemaOpt, TableOpt, require


def status(
    db: DbOpt = None,
    broker: BrokerOpt = None,
    table: TableOpt = "outbox",
    schema: SchemaOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print the backlog, the age of the oldest unrelayed row, why rows wait, dead letters and relays."""
    engine = make_engine(require(db, "--db", DATABASE_URL_ENV))
    tables = outbox_tables(OutboxConfig(table=table, schema=schema))
    check_schema(engine, tables)
    try:
        with engine.connect() as conn:
            backlog = read_backlog(conn, tables, now=dt.datetime.now(dt.UTC))
    except SQLAlchemyError as exc:
        raise storage_error(exc, engine) from None
    finally:
        engine.dispose()
    reach = _broker_reachable(broker) if broker else None
    if as_json:
        report = dataclasses.asdict(backlog)
        if reach is not None:
            report["broker"] = {"url": redact_url(broker), "reachable": reach[0], "error": reach[1]}
        typer.echo(json.dumps(report, sort_keys=True))
        return
    _print(backlog)
    if reach is not None:
        state = "reachable" if reach[0] else f"UNREACHABLE ({reach[1]})"
        typer.echo(f"broker {redact_url(broker)}: {state}")


def _broker_reachable(url: str) -> tuple[bool, str | None]:
    """Ping the broker without writing anything."""
    publisher = connect_publisher(url)
    try:
        if isinstance(publisher, RedisStreamsPublisher):
            publisher.client.ping()
        else:
            publisher.publish([])  # no entries, no fences: a no-op round trip
    except (OutboxError, RedisError) as exc:
        return False, type(exc).__name__ if isinstance(exc, RedisError) else str(exc)
    finally:
        publisher.close()
    return True, None


def _print(b: Backlog) -> None:
    age = "-" if b.oldest_age_s is None else f"{b.oldest_age_s:.1f}s"
    typer.echo(f"backlog: {b.pending} rows unpublished, oldest {age}")
    typer.echo(
        f"  due now: {b.due}; delayed: {b.delayed}; in retry backoff: {b.in_backoff};"
        f" waiting behind a parked key: {b.behind_parked_key}"
    )
    typer.echo(
        "  waiting behind an open transaction: 0 (rows are claimed by state, not by a high-water mark)"
    )
    typer.echo(f"kept for the replay window: {b.kept_published} rows")
    for topic, count in sorted(b.pending_by_topic.items()):
        typer.echo(f"  pending {topic}: {count}")
    total = sum(b.dead_letters_by_topic.values())
    typer.echo(f"dead letters: {total}")
    for topic, count in sorted(b.dead_letters_by_topic.items()):
        typer.echo(f"  dead letters {topic}: {count}")
    typer.echo(f"relays: {sum(1 for r in b.relays if r['alive'])} alive")
    for r in b.relays:
        state = ("alive" if r["alive"] else "gone") + (", idle" if r["idle"] else "")
        typer.echo(f"  {r['relay_id']} ({state}) partitions={r['partitions']} heartbeat={r['heartbeat_at']}")
