"""The soak's consumer: records each applied event in the inbox transaction."""

from __future__ import annotations

import os
import uuid

from sqlalchemy.orm import Session

from inbox import Registry
from outbox import Envelope

from ._schema import soak_applied

TOPIC = "soak.events"
GROUP = "soak"

registry = Registry()


@registry.handler(TOPIC)
def apply_event(message: Envelope, session: Session) -> None:
    """Append the event to the applied ledger (no uniqueness: doubles would show)."""
    payload = message.payload
    if not isinstance(payload, dict):
        msg = f"soak event {message.id} has a non-object payload"
        raise TypeError(msg)
    session.execute(
        soak_applied.insert().values(
            grp=GROUP,
            event_id=uuid.UUID(str(payload["event_id"])),
            key=str(payload["key"]),
            seq=int(payload["seq"]),
            pid=os.getpid(),
        )
    )
