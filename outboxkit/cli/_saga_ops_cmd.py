"""``outboxkit saga list|retry|abort``: find sagas, and unstick one (issue 14).

``retry`` and ``abort`` write a request (a timer message to the
orchestrator's timer topic, and a step log row saying who asked) in one
transaction; the orchestrator, which has the saga definitions, acts on it
when the message arrives, under the saga's rules.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Annotated

import typer
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

import saga
from outbox import ConfigError, OutboxConfig, StorageError, redact_url

from ._context import DATABASE_URL_ENV
from ._dead_letters_cmd import who_am_i
from ._options import DbOpt, SagaTimerTopicOpt, SchemaOpt, TableOpt
from ._saga_cmd import open_saga_engine

__all__ = ["saga_abort", "saga_list", "saga_retry"]

ByOpt = Annotated[str | None, typer.Option("--by", help="Recorded in the step log (default user@host).")]
SagaIdArg = Annotated[str, typer.Argument(help="The saga id (a UUID).", show_default=False)]


def _url(db: str | None) -> str:
    if not db:
        msg = f"no database URL: pass --db or set {DATABASE_URL_ENV}"
        raise ConfigError(msg)
    return db


def parse_saga_id(text: str) -> uuid.UUID:
    """The saga id in ``text``, or a :class:`ConfigError` that quotes (a bounded part of) it."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ConfigError(f"{text!r:.80} is not a saga id (a UUID)") from None


def saga_list(
    db: DbOpt = None,
    schema: SchemaOpt = None,
    saga_type: Annotated[str | None, typer.Option("--type", help="Only sagas of this type.")] = None,
    state: Annotated[saga.SagaState | None, typer.Option("--state", help="Only sagas in this state.")] = None,
    older_than: Annotated[
        float | None, typer.Option("--older-than", help="Only sagas started more than this many seconds ago.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most sagas to show.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List sagas, newest first, with their state, step and age."""
    if older_than is not None and older_than < 0:
        msg = f"--older-than must not be negative, got {older_than:g}"
        raise ConfigError(msg)
    url = _url(db)
    engine = open_saga_engine(url, schema)
    age = None if older_than is None else dt.timedelta(seconds=older_than)
    try:
        with engine.connect() as conn:
            found = saga.select_sagas(conn, saga_type=saga_type, state=state, older_than=age, limit=limit)
    except DBAPIError as exc:
        raise StorageError(f"cannot read {redact_url(url)}: {type(exc.orig).__name__}") from None
    finally:
        engine.dispose()
    now = dt.datetime.now(dt.UTC)
    for s in found:
        age_s = round((now - s.created_at).total_seconds(), 1)
        if as_json:
            row = {"id": str(s.id), "type": s.type, "state": s.state.value, "step": s.step,
                   "attempt": s.attempt, "age_s": age_s, "created_at": s.created_at.isoformat(),
                   "updated_at": s.updated_at.isoformat(), "error": s.error}  # fmt: skip
            typer.echo(json.dumps(row))
        else:
            error = f"\t{s.error.splitlines()[0][:120]}" if s.error else ""
            typer.echo(
                f"{s.id}\t{s.type}\t{s.state.value}\tstep={s.step}\tattempt={s.attempt}\t{age_s}s{error}"
            )
    if not as_json:
        typer.echo(f"{len(found)} saga(s)", err=True)


def _request(
    action: saga.OperatorAction,
    saga_id: str,
    db: str | None,
    schema: str | None,
    table: str,
    timer_topic: str,
    by: str | None,
) -> None:
    sid = parse_saga_id(saga_id)
    url = _url(db)
    engine = open_saga_engine(url, schema)
    request = saga.request_retry if action is saga.OperatorAction.RETRY else saga.request_abort
    try:
        with Session(engine) as session, session.begin():
            request(
                session,
                sid,
                by=by or who_am_i(),
                timer_topic=timer_topic,
                outbox_config=OutboxConfig(table=table, schema=schema),
            )
    finally:
        engine.dispose()
    typer.echo(
        f"{action.value} of saga {sid} requested: the orchestrator acts on it when its timer arrives"
        " (`outboxkit saga show` records it)"
    )


def saga_retry(
    saga_id: SagaIdArg,
    db: DbOpt = None,
    schema: SchemaOpt = None,
    table: TableOpt = "outbox",
    timer_topic: SagaTimerTopicOpt = saga.DEFAULT_TIMER_TOPIC,
    by: ByOpt = None,
) -> None:
    """Try the saga's current step (or compensation) again now: resend its command, rerun a local step."""
    _request(saga.OperatorAction.RETRY, saga_id, db, schema, table, timer_topic, by)


def saga_abort(
    saga_id: SagaIdArg,
    db: DbOpt = None,
    schema: SchemaOpt = None,
    table: TableOpt = "outbox",
    timer_topic: SagaTimerTopicOpt = saga.DEFAULT_TIMER_TOPIC,
    by: ByOpt = None,
) -> None:
    """Compensate a running saga now, from its current step down (refused once it compensates)."""
    _request(saga.OperatorAction.ABORT, saga_id, db, schema, table, timer_topic, by)
