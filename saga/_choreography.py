"""Choreography helpers: carry correlation and causation from message to message.

In a choreographed saga no orchestrator holds the state; each service reacts
to the others' events and publishes its own. What keeps the flow traceable is
two headers on every event:

* ``correlation_id`` names the business flow (one order) and is copied
  unchanged from the event that caused an event to the event itself;
* ``causation_id`` is the id of the message that caused this one.

Both come from ``follow_up_headers`` (``inbox.follow_up_headers``, the one
copy, re-exported by ``saga``); this module starts flows and checks names.

Event naming convention (docs/sagas.md): topics are ``<service>.events``; event
types are ``<Aggregate><PastTenseVerb>`` (``OrderCreated``, ``PaymentCharged``,
``PaymentDeclined``); a compensating event names what it undid
(``PaymentRefunded``, ``StockReleased``, ``OrderCancelled``); the key is the
id of the flow's aggregate (the order id), so one flow's events stay in order.
"""

from __future__ import annotations

import re
import uuid

from outbox import ValidationError

from ._headers import CORRELATION_ID

__all__ = ["EVENT_TYPE_PATTERN", "check_event_type", "new_flow_headers"]

EVENT_TYPE_PATTERN = r"[A-Z][A-Za-z0-9]*"
"""Event types are PascalCase: ``<Aggregate><PastTenseVerb>``, e.g. ``PaymentDeclined``."""
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)


def new_flow_headers(correlation_id: str | None = None) -> dict[str, str]:
    """Headers for the first event of a flow: a new ``correlation_id`` unless one is given.

    .. versionadded:: 0.1
    """
    return {CORRELATION_ID: correlation_id or str(uuid.uuid4())}


def check_event_type(event_type: str) -> str:
    """Return ``event_type`` if it matches :data:`EVENT_TYPE_PATTERN` (one naming convention per team).

    Example::

        @registry.handler("orders.events", types="OrderCreated")
        def charge(message: Envelope, session: Session) -> None:
            ...
            publish(session, "payments.events", {...}, key=message.key,
                    type=check_event_type("PaymentCharged"), headers=follow_up_headers(message))

    Raises:
        ValidationError: the type is not PascalCase ``<Aggregate><PastTenseVerb>``.

    .. versionadded:: 0.1
    """
    if not _EVENT_TYPE.fullmatch(event_type):
        msg = f"event type {event_type!r:.80} must be PascalCase <Aggregate><PastTenseVerb>"
        raise ValidationError(msg)
    return event_type
