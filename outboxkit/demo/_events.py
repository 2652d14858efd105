"""Domain events of the example, logged only once the transaction that made them true commits.

A handler's transaction may roll back (and the message be redelivered); a log
line written before the commit would then tell of something that never
happened. The timeline of ``outboxkit demo`` is built from these events.
"""

from __future__ import annotations

import structlog
from sqlalchemy import event
from sqlalchemy.orm import Session

__all__ = ["emit", "money"]

log = structlog.get_logger("outboxkit.demo")


def emit(session: Session, name: str, *, service: str, order_id: str, text: str, tone: str) -> None:
    """Log ``demo.<name>`` when ``session`` commits (``tone``: ok, fail, undo or info)."""
    event_name = f"demo.{name}"

    def after_commit(_: Session) -> None:
        log.info(event_name, service=service, order_id=order_id, text=text, tone=tone)

    event.listen(session, "after_commit", after_commit, once=True)


def money(cents: int) -> str:
    """``$12.34``."""
    return f"${cents // 100}.{cents % 100:02d}"
