"""Relay dead letters: the filtered list, one message, confirm, retry and purge.

Retry is the CLI's (``outboxkit dead-letters retry``): the message goes back
under its original id, so it is relayed before the later rows of its key.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay import DeadLetters

from ._app import dashboard_of, form_of, one, render
from ._database import Area
from ._filters import BadInput, parse_ids, parse_letter_filter
from ._letters import LIST_LIMIT, relay_letter, relay_letters, relay_letters_by_id
from ._security import Forbidden

__all__ = ["RELAY_ROUTES"]

_ACTIONS = ("retry", "purge")


async def letters(request: Request) -> Response:
    board = dashboard_of(request)
    f = parse_letter_filter(request.query_params)

    def read() -> list[object]:
        with board.db.connect() as conn:
            return list(relay_letters(conn, board.db, f))

    found = await run_in_threadpool(read)
    return render(request, "dead_letters.html", letters=found, filter=f, limit=LIST_LIMIT,
                  table=board.config.table, area=Area.RELAY)  # fmt: skip


def _letter_id(request: Request) -> int:
    return parse_ids([str(request.path_params["letter_id"])])[0]


async def letter(request: Request) -> Response:
    board = dashboard_of(request)
    letter_id = _letter_id(request)

    def read() -> object:
        with board.db.connect() as conn:
            return relay_letter(conn, board.db, letter_id)

    found = await run_in_threadpool(read)
    if found is None:
        raise HTTPException(404, f"no relay dead letter with id {letter_id}")
    return render(request, "dead_letter.html", letter=found, area=Area.RELAY)


def _action(value: str | None) -> str:
    if value not in _ACTIONS:
        raise BadInput("choose retry or purge")
    return value


async def confirm(request: Request) -> Response:
    board = dashboard_of(request)
    action = _action(request.query_params.get("action"))
    ids = parse_ids(request.query_params.getlist("id"))

    def read() -> object:
        with board.db.connect() as conn:
            return relay_letters_by_id(conn, board.db, ids)

    found = await run_in_threadpool(read)
    if not found:
        raise HTTPException(404, "none of the selected dead letters exists")
    return render(request, "confirm_letters.html", action=action, letters=found, area=Area.RELAY,
                  post_to=f"/dead-letters/{action}", table=board.config.table,
                  missing=sorted(set(ids) - {x.id for x in found}))  # type: ignore[attr-defined]  # fmt: skip


async def act(request: Request) -> Response:
    board = dashboard_of(request)
    action = _action(request.path_params["action"])
    form = await form_of(request)
    session = board.guard.check_action(request, one(form, "csrf"))
    if (why := board.refused(Area.RELAY)) is not None:
        raise Forbidden(f"{action} refused: {why}")
    ids = parse_ids(form.get("id", []))
    letters_api = DeadLetters(board.db.engine, board.db.tables)

    def run() -> tuple[list[int], int]:
        with board.db.connect() as conn:
            existing = {x.id for x in relay_letters_by_id(conn, board.db, ids)}
        if not existing:
            return [], -1
        if action == "retry":
            return letters_api.retry(ids=sorted(existing), by=session.who), 0
        return [], letters_api.purge(ids=sorted(existing))

    retried, purged = await run_in_threadpool(run)
    if purged == -1:
        raise HTTPException(404, "none of the selected dead letters exists: nothing changed")
    return render(request, "result_letters.html", action=action, asked=ids, retried=retried, purged=purged,
                  back="/dead-letters", area=Area.RELAY, table=board.config.table)  # fmt: skip


RELAY_ROUTES = [
    Route("/dead-letters", letters, methods=["GET"]),
    Route("/dead-letters/confirm", confirm, methods=["GET"]),
    Route("/dead-letters/{action:str}", act, methods=["POST"]),
    Route("/dead-letters/{letter_id:str}", letter, methods=["GET"]),
]
