"""Consumer dead letters: the filtered list, one entry, confirm, retry and purge.

Retry runs the entry through its handler again, idempotently (the inbox still
guards it), as ``outboxkit consumer-dead-letters retry`` does; it needs the
handlers (``outboxkit dashboard --handlers``). Purge needs nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import inbox
from outbox import OutboxError

from ._app import Dashboard, dashboard_of, form_of, one, render
from ._database import Area
from ._filters import BadInput, parse_ids, parse_letter_filter
from ._letters import LIST_LIMIT, consumer_letter, consumer_letters, consumer_letters_by_id, pretty_fields
from ._security import Forbidden

__all__ = ["CONSUMER_ROUTES"]

_ACTIONS = ("retry", "purge")


@dataclass(frozen=True, slots=True)
class RetryResult:
    """What retrying one consumer dead letter did."""

    id: int
    outcome: str
    failed: bool


def _table_missing(board: Dashboard) -> bool:
    with board.db.connect() as conn:
        return not board.db.has_table(conn, inbox.inbox_dead_letter)


async def letters(request: Request) -> Response:
    board = dashboard_of(request)
    f = parse_letter_filter(request.query_params)

    def read() -> list[inbox.ConsumerDeadLetter] | None:
        if _table_missing(board):
            return None
        with board.db.connect() as conn:
            return consumer_letters(conn, f)

    found = await run_in_threadpool(read)
    return render(request, "consumer_dead_letters.html", letters=found, filter=f, limit=LIST_LIMIT,
                  area=Area.CONSUMER, can_retry=board.config.registry is not None)  # fmt: skip


async def letter(request: Request) -> Response:
    board = dashboard_of(request)
    letter_id = parse_ids([str(request.path_params["letter_id"])])[0]

    def read() -> inbox.ConsumerDeadLetter | None:
        if _table_missing(board):
            return None
        with board.db.connect() as conn:
            return consumer_letter(conn, letter_id)

    found = await run_in_threadpool(read)
    if found is None:
        raise HTTPException(404, f"no consumer dead letter with id {letter_id}")
    headers, payload = pretty_fields(found)
    return render(request, "consumer_dead_letter.html", letter=found, headers=headers, payload=payload,
                  area=Area.CONSUMER, can_retry=board.config.registry is not None)  # fmt: skip


def _action(value: str | None) -> str:
    if value not in _ACTIONS:
        raise BadInput("choose retry or purge")
    return value


async def confirm(request: Request) -> Response:
    board = dashboard_of(request)
    action = _action(request.query_params.get("action"))
    ids = parse_ids(request.query_params.getlist("id"))

    def read() -> list[inbox.ConsumerDeadLetter]:
        if _table_missing(board):
            return []
        with board.db.connect() as conn:
            return consumer_letters_by_id(conn, ids)

    found = await run_in_threadpool(read)
    if not found:
        raise HTTPException(404, "none of the selected consumer dead letters exists")
    return render(request, "confirm_consumer.html", action=action, letters=found, area=Area.CONSUMER,
                  post_to=f"/consumer-dead-letters/{action}", can_retry=board.config.registry is not None,
                  missing=sorted(set(ids) - {x.id for x in found}))  # fmt: skip


def _retry_all(board: Dashboard, ids: list[int]) -> list[RetryResult]:
    registry = board.config.registry
    assert registry is not None  # noqa: S101 - checked by the caller
    results: list[RetryResult] = []
    for letter_id in ids:
        try:
            outcome = inbox.retry_dead_letter(board.db.engine, registry, letter_id)
        except (OutboxError, SQLAlchemyError) as exc:
            results.append(RetryResult(letter_id, f"not retried: {type(exc).__name__}: {exc}", failed=True))
        except Exception as exc:  # noqa: BLE001 - the handler failed again: report it, keep the letter
            results.append(RetryResult(letter_id, f"failed again: {type(exc).__name__}: {exc}", failed=True))
        else:
            results.append(RetryResult(letter_id, outcome.value, failed=False))
    return results


async def act(request: Request) -> Response:
    board = dashboard_of(request)
    action = _action(request.path_params["action"])
    form = await form_of(request)
    board.guard.check_action(request, one(form, "csrf"))
    if (why := board.refused(Area.CONSUMER)) is not None:
        raise Forbidden(f"{action} refused: {why}")
    if action == "retry" and board.config.registry is None:
        raise Forbidden(
            "retry needs the handlers: start the dashboard with --handlers package.module:registry"
        )
    ids = parse_ids(form.get("id", []))

    def run() -> tuple[list[RetryResult], int]:
        with board.db.connect() as conn:
            existing = sorted(x.id for x in consumer_letters_by_id(conn, ids))
        if not existing:
            return [], -1
        if action == "retry":
            return _retry_all(board, existing), 0
        return [], inbox.purge_dead_letters(board.db.engine, ids=existing)

    results, purged = await run_in_threadpool(run)
    if purged == -1:
        raise HTTPException(404, "none of the selected consumer dead letters exists: nothing changed")
    return render(request, "result_consumer.html", action=action, asked=ids, results=results, purged=purged,
                  back="/consumer-dead-letters", area=Area.CONSUMER)  # fmt: skip


CONSUMER_ROUTES = [
    Route("/consumer-dead-letters", letters, methods=["GET"]),
    Route("/consumer-dead-letters/confirm", confirm, methods=["GET"]),
    Route("/consumer-dead-letters/{action:str}", act, methods=["POST"]),
    Route("/consumer-dead-letters/{letter_id:str}", letter, methods=["GET"]),
]
