"""Handlers run by the consume end-to-end tests in real ``outboxkit consume`` processes.

Environment switches (set only in the process that should misbehave):

- ``INBOX_E2E_KILL_AFTER_COMMIT=N``: SIGKILL this process right after the
  transaction of the message with payload ``n == N`` commits, before its ack.
- ``INBOX_E2E_HANG_ON=N``: for the message with ``n == N``, touch
  ``INBOX_E2E_MARKER`` and hang inside the handler.
- ``INBOX_E2E_SLOW=S``: every handler call sleeps S seconds.
"""

from __future__ import annotations

import os
import pathlib
import signal
import time

from sqlalchemy import event
from sqlalchemy.orm import Session

import inbox
from outbox import Envelope
from tests._inbox import record_effect

registry = inbox.Registry()
_KILL_AFTER_COMMIT = os.environ.get("INBOX_E2E_KILL_AFTER_COMMIT")
_HANG_ON = os.environ.get("INBOX_E2E_HANG_ON")
_SLOW = float(os.environ.get("INBOX_E2E_SLOW", "0"))


def _n(message: Envelope) -> str:
    payload = message.payload if isinstance(message.payload, dict) else {}
    return str(payload.get("n"))


@registry.handler("orders.created")
def on_order(message: Envelope, session: Session) -> None:
    """Record the effect; misbehave as the environment asks."""
    if _SLOW:
        time.sleep(_SLOW)
    if _HANG_ON is not None and _n(message) == _HANG_ON:
        pathlib.Path(os.environ["INBOX_E2E_MARKER"]).touch()
        time.sleep(600)
    record_effect(message, session)
    if _KILL_AFTER_COMMIT is not None and _n(message) == _KILL_AFTER_COMMIT:
        session.info["kill_after_commit"] = True


@event.listens_for(Session, "after_commit")
def _kill_after_commit(session: Session) -> None:
    if session.info.get("kill_after_commit"):
        os.kill(os.getpid(), signal.SIGKILL)
