"""Sagas: list by type, state and age, search by id, one saga's timeline, retry and abort.

Retry and abort are requests the orchestrator carries out (see
:func:`saga.request_retry`); the page says so and links back to the timeline,
where the request shows up at once and its effect when the orchestrator acts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

import saga
from saga.tables import saga_instance

from ._app import Dashboard, dashboard_of, form_of, one, render
from ._database import Area
from ._filters import MAX_TEXT, BadInput, parse_letter_filter, parse_uuid
from ._security import Forbidden
from ._timeline import lay_out

__all__ = ["SAGA_ROUTES"]

LIST_LIMIT = 200


@dataclass(frozen=True, kw_only=True, slots=True)
class SagaFilter:
    """What the saga list is narrowed to."""

    saga_type: str | None
    state: saga.SagaState | None
    older_than_s: float | None


def _filter(params: ImmutableMultiDict[str, str]) -> SagaFilter:
    saga_type = params.get("type") or None
    if saga_type is not None and len(saga_type) > MAX_TEXT:
        raise BadInput(f"the type filter is longer than {MAX_TEXT} characters")
    state_text = params.get("state") or None
    try:
        state = None if state_text is None else saga.SagaState(state_text)
    except ValueError:
        raise BadInput(f"state must be one of {', '.join(s.value for s in saga.SagaState)}") from None
    older = parse_letter_filter(ImmutableMultiDict({"older_than": params.get("older_than", "")})).older_than
    return SagaFilter(
        saga_type=saga_type, state=state, older_than_s=None if older is None else older.total_seconds()
    )


def _no_sagas(board: Dashboard) -> bool:
    with board.db.connect() as conn:
        return not board.db.has_table(conn, saga_instance)


async def sagas(request: Request) -> Response:
    board = dashboard_of(request)
    if wanted := request.query_params.get("id", "").strip():
        return RedirectResponse(f"/sagas/{parse_uuid(wanted)}", status_code=303)
    f = _filter(request.query_params)

    def read() -> tuple[list[saga.SagaInstance] | None, list[saga.SagaCount]]:
        if _no_sagas(board):
            return None, []
        import datetime as dt  # noqa: PLC0415 - only here

        older = None if f.older_than_s is None else dt.timedelta(seconds=f.older_than_s)
        with board.db.connect() as conn:
            found = saga.select_sagas(
                conn, saga_type=f.saga_type, state=f.state, older_than=older, limit=LIST_LIMIT
            )
            return found, saga.count_sagas(conn)

    found, counts = await run_in_threadpool(read)
    types = sorted({c.type for c in counts})
    return render(request, "sagas.html", sagas=found, counts=counts, types=types, filter=f,
                  states=list(saga.SagaState), limit=LIST_LIMIT)  # fmt: skip


def _read_saga(board: Dashboard, sid: uuid.UUID) -> tuple[saga.SagaInstance, list[saga.StepLogEntry]]:
    if _no_sagas(board):
        raise HTTPException(404, "this database has no saga tables")
    with board.db.connect() as conn:
        instance = saga.select_saga(conn, sid)
        if instance is None:
            raise HTTPException(404, f"no saga {sid}")
        return instance, saga.select_step_log(conn, sid)


async def saga_page(request: Request) -> Response:
    board = dashboard_of(request)
    sid = parse_uuid(str(request.path_params["saga_id"]))
    instance, entries = await run_in_threadpool(_read_saga, board, sid)
    actions = {a.value: saga.refusal(instance, a) for a in saga.OperatorAction}
    return render(request, "saga.html", saga=instance, entries=entries, timeline=lay_out(entries),
                  actions=actions, area=Area.SAGA)  # fmt: skip


def _action(value: str | None) -> saga.OperatorAction:
    try:
        return saga.OperatorAction(value or "")
    except ValueError:
        raise BadInput("choose retry or abort") from None


async def confirm(request: Request) -> Response:
    board = dashboard_of(request)
    sid = parse_uuid(str(request.path_params["saga_id"]))
    action = _action(request.query_params.get("action"))
    instance, _ = await run_in_threadpool(_read_saga, board, sid)
    return render(request, "confirm_saga.html", saga=instance, action=action.value,
                  refusal=saga.refusal(instance, action), area=Area.SAGA)  # fmt: skip


async def act(request: Request) -> Response:
    board = dashboard_of(request)
    sid = parse_uuid(str(request.path_params["saga_id"]))
    action = _action(request.path_params["action"])
    form = await form_of(request)
    session = board.guard.check_action(request, one(form, "csrf"))
    if (why := board.refused(Area.SAGA)) is not None:
        raise Forbidden(f"{action.value} refused: {why}")
    request_it = saga.request_retry if action is saga.OperatorAction.RETRY else saga.request_abort

    def run() -> uuid.UUID:
        with Session(board.db.engine) as db_session, db_session.begin():
            return request_it(db_session, sid, by=session.who, timer_topic=board.config.timer_topic,
                              outbox_config=board.db.outbox_config)  # fmt: skip

    try:
        message_id = await run_in_threadpool(run)
    except saga.SagaNotFoundError:
        raise HTTPException(404, f"no saga {sid}: nothing changed") from None
    except (saga.SagaActionRefusedError, saga.SagaConflictError) as exc:
        raise HTTPException(409, f"{exc}: nothing changed") from None
    return render(request, "result_saga.html", saga_id=sid, action=action.value, message_id=message_id,
                  timer_topic=board.config.timer_topic)  # fmt: skip


SAGA_ROUTES = [
    Route("/sagas", sagas, methods=["GET"]),
    Route("/sagas/{saga_id:str}", saga_page, methods=["GET"]),
    Route("/sagas/{saga_id:str}/confirm", confirm, methods=["GET"]),
    Route("/sagas/{saga_id:str}/{action:str}", act, methods=["POST"]),
]
