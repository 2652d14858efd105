"""The handler contract, checked: signature at registration, no commit, no un-awaited coroutine.

A handler that breaks the contract used to pass silently (a commit made its
effects durable outside the inbox transaction; a returned coroutine never ran,
so its follow-up was never written while the message was marked handled).
Both now fail the message with a :class:`HandlerContractError`, which the
runner dead-letters at once: retrying cannot fix a programming error.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from outbox import ConfigError, OutboxError, unawaited_publishes, watch_async_publishes

__all__ = ["HandlerContractError", "HandlerSession", "call_sync", "check_signature", "guarded"]

_RUNNING = "outboxkit.handler_running"
_COMMITTED = "outboxkit.handler_committed"
_SHAPE = "(message, session)"


class HandlerContractError(OutboxError):
    """The handler broke the inbox contract; the message was rolled back and dead-lettered.

    .. versionadded:: 0.2
    """


class HandlerSession(Session):
    """The session the runner gives handlers: refuses ``commit()`` while a handler runs."""


@event.listens_for(HandlerSession, "before_commit")
def _refuse_commit(session: Session) -> None:
    if session.info.get(_RUNNING) and not session.in_nested_transaction():
        session.info[_COMMITTED] = True
        msg = "handler called session.commit(): the runner commits; effects were rolled back"
        raise HandlerContractError(msg)


class guarded:  # noqa: N801 - used as a context manager, like contextlib's
    """Mark ``session`` as running a handler; raise if the handler committed (even if it caught the error)."""

    __slots__ = ("_info",)

    def __init__(self, info: dict[Any, Any]) -> None:
        self._info = info

    def __enter__(self) -> None:
        self._info[_RUNNING] = True
        self._info.pop(_COMMITTED, None)
        watch_async_publishes(self._info)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._info.pop(_RUNNING, None)
        unawaited = unawaited_publishes(self._info)
        if exc_type is not None:
            return
        if self._info.pop(_COMMITTED, False):
            msg = "handler called session.commit(): the runner commits; effects were rolled back"
            raise HandlerContractError(msg)
        if unawaited:
            msg = "handler did not await a publish call: its message was not written; `await` it"
            raise HandlerContractError(msg)


def call_sync(handler: Callable[..., object], message: object, session: Session, name: str) -> None:
    """Run a sync handler; an awaitable result means an ``async`` call was never awaited."""
    result = handler(message, session)
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if callable(close):
            close()  # no "coroutine was never awaited" RuntimeWarning on top
        msg = (
            f"handler {name} returned an un-awaited {type(result).__name__}: nothing it does ran;"
            " declare it `async def` or `await` the call"
        )
        raise HandlerContractError(msg)


def check_signature(func: Callable[..., object], name: str) -> None:
    """Refuse at registration a handler that cannot be called as ``handler(message, session)``."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature: trust the caller
        return
    try:
        signature.bind(None, None)
    except TypeError as exc:
        msg = f"handler {name} must accept {_SHAPE}, its signature is {signature}: {exc}"
        raise ConfigError(msg) from None
