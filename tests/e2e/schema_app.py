"""Handlers of the ``--schema`` end-to-end test: the test effect and the order saga's orchestrator (#9)."""

from __future__ import annotations

from sqlalchemy.orm import Session

import inbox
from outbox import Envelope
from tests._inbox import record_effect
from tests._saga import REPLIES, orchestrator

registry = inbox.Registry()
registry.handler("orders.created")(record_effect)
_orchestrator = orchestrator()


@registry.handler(REPLIES)
def on_reply(message: Envelope, session: Session) -> None:
    """Advance the saga the reply belongs to."""
    _orchestrator.handle_reply(session, message)
