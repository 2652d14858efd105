"""``outboxkit saga show ID``: one saga's state and step log."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

import saga
from outbox import ConfigError, StorageError, create_engine, redact_url, use_schema

from ._context import DATABASE_URL_ENV
from ._options import DbOpt, SchemaOpt

saga_app = typer.Typer(
    name="saga",
    help="Inspect sagas; retry or abort a stuck one.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


@saga_app.callback()
def _saga() -> None:
    """Inspect sagas; retry or abort a stuck one."""


@saga_app.command(name="show")
def show(
    saga_id: Annotated[str, typer.Argument(help="The saga id (a UUID).", show_default=False)],
    db: DbOpt = None,
    schema: SchemaOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Print one saga's state and its step log: commands, replies, timeouts, compensations."""
    if not db:
        msg = f"no database URL: pass --db or set {DATABASE_URL_ENV}"
        raise ConfigError(msg)
    try:
        sid = uuid.UUID(saga_id)
    except ValueError:
        raise ConfigError(f"{saga_id!r:.80} is not a saga id (a UUID)") from None
    engine = open_saga_engine(db, schema)
    try:
        with engine.connect() as conn:
            instance = saga.select_saga(conn, sid)
            if instance is None:
                raise saga.SagaNotFoundError(f"no saga {sid} in {redact_url(db)}")
            entries = saga.select_step_log(conn, sid)
            deadline = saga.select_saga_deadline(conn, sid)
    except DBAPIError as exc:
        raise StorageError(f"cannot read {redact_url(db)}: {type(exc.orig).__name__}") from None
    finally:
        engine.dispose()
    typer.echo(_json(instance, entries, deadline) if as_json else _text(instance, entries, deadline))


def open_saga_engine(url: str, schema: str | None) -> Engine:
    """An engine on the orchestrator's database that never creates an SQLite file by reading."""
    engine = create_engine(url, poolclass=NullPool)  # a malformed URL is one ConfigError
    database = engine.url.database
    if (
        engine.dialect.name == "sqlite"
        and database
        and database != ":memory:"
        and not Path(database).exists()
    ):
        # Reading must not create an empty database file as a side effect.
        engine.dispose()
        msg = f"no SQLite database at {database}"
        raise ConfigError(msg)
    try:
        return use_schema(engine, schema)
    except ConfigError:
        engine.dispose()
        raise


def _is_missing_file(database: str | None) -> bool:
    if not database or database == ":memory:" or database.startswith("file:"):
        return False
    return not Path(database).exists()


def _time(value: object) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else "-"


def _json(instance: saga.SagaInstance, entries: list[saga.StepLogEntry], deadline: dt.datetime | None) -> str:
    doc = {
        "saga": {
            "id": str(instance.id),
            "type": instance.type,
            "state": instance.state.value,
            "step": instance.step,
            "attempt": instance.attempt,
            "version": instance.version,
            "correlation_id": instance.correlation_id,
            "error": instance.error,
            "deadline_at": None if instance.deadline_at is None else _time(instance.deadline_at),
            # The overall deadline (SagaDefinition.deadline), while pending; deadline_at is the next timer.
            "saga_deadline_at": None if deadline is None else _time(deadline),
            "created_at": _time(instance.created_at),
            "updated_at": _time(instance.updated_at),
            "data": instance.data,
        },
        "log": [
            {
                "time": _time(e.created_at),
                "step": e.step,
                "step_name": e.step_name,
                "attempt": e.attempt,
                "kind": e.kind.value,
                "message_id": None if e.message_id is None else str(e.message_id),
                "detail": e.detail,
                "error": e.error,
            }
            for e in entries
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


def _text(instance: saga.SagaInstance, entries: list[saga.StepLogEntry], deadline: dt.datetime | None) -> str:
    lines = [
        (
            f"saga {instance.id}  type={instance.type}  state={instance.state.value}"
            f"  step={instance.step}  attempt={instance.attempt}  version={instance.version}"
        ),
        (
            f"correlation_id={instance.correlation_id}  created={_time(instance.created_at)}"
            f"  updated={_time(instance.updated_at)}"
        ),
    ]
    if instance.deadline_at is not None:
        lines.append(f"next timer at {_time(instance.deadline_at)}")
    if deadline is not None:
        left = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
        when = f"in {left:.0f}s" if left >= 0 else f"{-left:.0f}s ago, not handled yet"
        lines.append(f"saga deadline at {_time(deadline)} ({when})")
    if instance.error:
        lines.append(f"error: {instance.error}")
    lines.append(f"data: {json.dumps(instance.data, ensure_ascii=False, sort_keys=True)}")
    lines.append("")
    lines.append(f"{'TIME':<32}  {'STEP':<24}  {'TRY':>3}  {'KIND':<18}  DETAIL")
    for e in entries:
        step = "-" if e.step is None else f"{e.step} {e.step_name}"
        attempt = "-" if e.attempt is None else str(e.attempt)
        detail = " ".join(
            part
            for part in (
                e.detail or "",
                f"message={e.message_id}" if e.message_id else "",
                f"error={e.error}" if e.error else "",
            )
            if part
        )
        lines.append(f"{_time(e.created_at):<32}  {step:<24}  {attempt:>3}  {e.kind.value:<18}  {detail}")
    return "\n".join(lines)
