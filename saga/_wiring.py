"""Wire an orchestrator to an inbox handler registry (duck-typed: anything with ``handler(topic)``).

The orchestrator's reply and timer topics get one handler each; the handlers
run in the inbox transaction, so the inbox record, the saga transition and
the messages it sends commit together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sqlalchemy.orm import Session

from outbox import Envelope

from ._orchestrator import Orchestrator

__all__ = ["HandlerRegistry", "SagaHandler", "register"]

SagaHandler = Callable[[Envelope, Session], None]
"""A synchronous inbox handler: ``(message, session)``."""


class HandlerRegistry(Protocol):
    """What :func:`register` needs of a registry, e.g. ``inbox.Registry``.

    .. versionadded:: 0.1
    """

    def handler(self, topic: str) -> Callable[[SagaHandler], object]:
        """Return a decorator that registers a handler of ``topic``."""
        ...


def register(registry: HandlerRegistry, orchestrator: Orchestrator) -> tuple[SagaHandler, SagaHandler]:
    """Register the orchestrator's reply and timer handlers on ``registry``; return them.

    Example::

        registry = inbox.Registry()
        saga.register(registry, orchestrator)
        # outboxkit consume myapp.sagas:registry --db ... --broker ...

    .. versionadded:: 0.1
    """

    def on_reply(message: Envelope, session: Session) -> None:
        orchestrator.handle_reply(session, message)

    def on_timer(message: Envelope, session: Session) -> None:
        orchestrator.handle_timer(session, message)

    on_reply.__name__ = on_reply.__qualname__ = "saga_reply_handler"
    on_timer.__name__ = on_timer.__qualname__ = "saga_timer_handler"
    registry.handler(orchestrator.reply_topic)(on_reply)
    registry.handler(orchestrator.timer_topic)(on_timer)
    return on_reply, on_timer
