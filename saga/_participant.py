"""Participants: decide each saga step once, and answer every copy of its command alike.

:func:`participate` is what a participant's command handler calls. It keeps
one row per (saga, step) in the participant's own database and gives the
guarantees docs/sagas.md asks of participants, by construction:

* an action is applied at most once; a duplicate or resent command gets the
  same reply again (``ok`` with the same data, or the same refusal);
* a compensation undoes the action at most once, and when the action never
  came it does nothing and still answers ``ok`` ("never happened");
* an action arriving after its compensation is refused, so a late command
  cannot leave an effect behind a compensated saga;
* an action and its compensation never run at the same time (the row is
  locked first).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from outbox import Envelope, JSONValue, OutboxConfig, default_serializer

from ._errors import SagaMessageError, StepFailed
from ._headers import Coordinates, Phase, envelope_label, parse_coordinates
from ._reply import reply
from .tables import saga_participant

__all__ = ["Decision", "StepHandler", "participate"]

StepHandler = Callable[[Session, Envelope], Mapping[str, JSONValue] | None]
"""Does (or undoes) the step: ``(session, command) -> reply data | None``; raises StepFailed to refuse."""

_DONE = "done"
_REFUSED = "refused"


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """What :func:`participate` answered.

    Attributes:
        ok: the reply's ``ok``.
        data: the reply's data.
        reason: why the step was refused, if it was.
        ran: whether the handler ran (and its effects commit with the reply).
        reply_id: the reply's message id.

    .. versionadded:: 0.1
    """

    ok: bool
    data: Mapping[str, JSONValue] | None
    reason: str | None
    ran: bool
    reply_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class _Row:
    action: str | None
    data: Mapping[str, JSONValue] | None
    reason: str | None
    compensated: bool


def participate(
    session: Session, command: Envelope, handler: StepHandler, *, config: OutboxConfig | None = None
) -> Decision:
    """Run ``handler`` for a saga command at most once per saga step, and reply through the outbox.

    Call it from the participant's inbox handler of the command topic, with
    the action's handler for action commands and the compensation's handler
    for compensation commands (``command.headers["saga_phase"]`` tells which).
    The handler runs in a savepoint of the caller's transaction; it raises
    :class:`~saga.StepFailed` to refuse (an action refused is refused for good;
    a compensation refused is retried later by the orchestrator). Any other
    exception propagates: roll back, and the message is delivered again.

    Example::

        @registry.handler("payment.commands")
        def payments(message: Envelope, session: Session) -> None:
            handler = charge if message.headers["saga_phase"] == "action" else refund
            saga.participate(session, message, handler)

    Raises:
        SagaMessageError: ``command`` is not a saga command.

    .. versionadded:: 0.1
    """
    coords = parse_coordinates(command.headers, envelope_label(command))
    if "reply_to" not in command.headers:
        raise SagaMessageError(f"{envelope_label(command)} lacks the 'reply_to' header")
    row = _lock(session, coords)
    if coords.phase is Phase.ACTION:
        decision = _act(session, command, coords, row, handler)
    else:
        decision = _compensate(session, command, coords, row, handler)
    ok, data, reason, ran = decision
    reply_id = reply(session, command, ok=ok, data=data, reason=reason, config=config)
    return Decision(ok=ok, data=data, reason=reason, ran=ran, reply_id=reply_id)


_Answer = tuple[bool, Mapping[str, JSONValue] | None, str | None, bool]


def _act(
    session: Session, command: Envelope, coords: Coordinates, row: _Row, handler: StepHandler
) -> _Answer:
    if row.compensated:
        return False, None, "compensated before the action arrived", False
    if row.action == _DONE:
        return True, row.data, None, False
    if row.action == _REFUSED:
        return False, None, row.reason, False
    try:
        with session.begin_nested():
            result = handler(session, command)
    except StepFailed as failed:
        _save(session, coords, action=_REFUSED, reason=failed.reason)
        return False, None, failed.reason, True
    data = _mapping(result)
    _save(session, coords, action=_DONE, data=data)
    return True, data, None, True


def _compensate(
    session: Session, command: Envelope, coords: Coordinates, row: _Row, handler: StepHandler
) -> _Answer:
    if row.compensated:
        return True, None, None, False
    if row.action != _DONE:
        # The action never came, or was refused: nothing to undo. Remember the
        # compensation so a late action is refused.
        _save(session, coords, compensated=True)
        return True, None, None, False
    try:
        with session.begin_nested():
            result = handler(session, command)
    except StepFailed as failed:
        return False, None, failed.reason, True
    _save(session, coords, compensated=True)
    return True, _mapping(result), None, True


def _mapping(result: object) -> Mapping[str, JSONValue] | None:
    if result is not None and not isinstance(result, Mapping):
        msg = f"a step handler must return a mapping or None, not {type(result).__name__}"
        raise TypeError(msg)
    return result


def _lock(session: Session, coords: Coordinates) -> _Row:
    """Create the (saga, step) row if missing, lock it, and read it."""
    t = saga_participant
    key = (t.c.saga_id == coords.saga_id, t.c.step == coords.step)
    now = dt.datetime.now(dt.UTC)
    _insert_missing(
        session, {"saga_id": coords.saga_id, "step": coords.step, "compensated": False, "updated_at": now}
    )
    # An UPDATE takes the row lock on PostgreSQL and the write lock on SQLite,
    # so the read below cannot be overtaken by the other phase of this step.
    session.execute(update(t).where(*key).values(updated_at=now))
    found = session.execute(select(t.c.action, t.c.data, t.c.reason, t.c.compensated).where(*key)).one()
    data = json.loads(found.data) if isinstance(found.data, str) else found.data
    return _Row(action=found.action, data=data, reason=found.reason, compensated=bool(found.compensated))


def _insert_missing(session: Session, values: dict[str, object]) -> None:
    # ON CONFLICT DO NOTHING: a concurrent first copy of the command may insert
    # the row first (PostgreSQL waits for it, then does nothing), and the
    # caller's transaction stays usable either way.
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(pg_insert(saga_participant).values(**values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        session.execute(sqlite_insert(saga_participant).values(**values).on_conflict_do_nothing())
    else:
        try:
            with session.begin_nested():
                session.execute(insert(saga_participant).values(**values))
        except IntegrityError:
            pass


def _save(
    session: Session,
    coords: Coordinates,
    *,
    action: str | None = None,
    data: Mapping[str, JSONValue] | None = None,
    reason: str | None = None,
    compensated: bool | None = None,
) -> None:
    t = saga_participant
    values: dict[str, object] = {"updated_at": dt.datetime.now(dt.UTC)}
    if action is not None:
        values.update(action=action, data=None if data is None else default_serializer(data), reason=reason)
    if compensated is not None:
        values["compensated"] = compensated
    session.execute(update(t).where(t.c.saga_id == coords.saga_id, t.c.step == coords.step).values(**values))
