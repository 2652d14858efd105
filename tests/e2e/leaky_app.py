"""A handler that fails while its locals hold secrets (issue #9 log-leak tests)."""

from __future__ import annotations

from sqlalchemy.orm import Session

import inbox
from outbox import Envelope

registry = inbox.Registry()
PASSWORD_SENTINEL = "Pw-sentinel-7c21"


@registry.handler("orders.created")
def on_order(message: Envelope, session: Session) -> None:
    """Fail with a card number and a password URL in locals and a URL in the exception text."""
    del session
    payload = message.payload if isinstance(message.payload, dict) else {}
    card = str(payload.get("card"))
    if not card:
        return
    dsn = f"postgresql://app:{PASSWORD_SENTINEL}@db.internal/billing"
    msg = f"payment gateway refused the card (via {dsn})"
    raise RuntimeError(msg)
