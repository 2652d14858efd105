"""Follow-up messages: correlation and causation headers copied from the message handled."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Mapping

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from outbox import Envelope, HeadersError, JSONValue, ValidationError, publish

__all__ = ["follow_up_headers", "publish_follow_up", "publish_follow_up_async"]


CORRELATION_ID = "correlation_id"
CAUSATION_ID = "causation_id"


def follow_up_headers(cause: Envelope, headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers for a message produced while handling ``cause``: ``headers`` plus the flow's two.

    - ``causation_id`` is the id of ``cause``, the message being handled;
    - ``correlation_id`` is carried over from ``cause`` unchanged, or starts
      as the cause's own id when it had none (the cause started the flow);
    - ``headers`` add anything else (``tenant``, ``traceparent`` ...).

    The cause decides the two flow headers; the caller cannot override them.
    A saga's command, the participant's reply and the next command form one
    chain that is only traceable if every link names its real cause and the
    flow it belongs to, so a different ``correlation_id`` or ``causation_id``
    in ``headers`` is refused rather than kept or silently dropped. A message
    that starts a new flow takes fresh headers (``saga.new_flow_headers()``)
    instead of follow-up ones. The same function serves the inbox and sagas
    (``saga.follow_up_headers`` is this one).

    Raises:
        HeadersError: ``headers`` sets ``correlation_id`` or ``causation_id``
            to another value than the cause gives.

    .. versionadded:: 0.1
    """
    flow = {CORRELATION_ID: cause.correlation_id or str(cause.id), CAUSATION_ID: str(cause.id)}
    result = dict(headers or {})
    for name, value in flow.items():
        if result.get(name, value) != value:
            msg = (
                f"header {name!r} of a follow-up is set from the message being handled; drop it from headers"
            )
            raise HeadersError(msg)
    result.update(flow)
    return result


def publish_follow_up(
    session: Session,
    cause: Envelope,
    topic: str,
    payload: JSONValue | object,
    *,
    key: str | None = None,
    type: str | None = None,  # noqa: A002 - CloudEvents name
    headers: Mapping[str, str] | None = None,
) -> uuid.UUID:
    """Publish through the outbox in the handler's transaction, with :func:`follow_up_headers`.

    Raises:
        ValidationError: ``session`` is an ``AsyncSession`` (use
            ``await publish_follow_up_async(...)``), or the message was refused.

    .. versionadded:: 0.1
    """
    candidate: object = session  # a runtime check: an AsyncSession here used to write nothing
    if isinstance(candidate, AsyncSession | AsyncConnection):
        msg = (
            "publish_follow_up needs a sync Session;"
            " with an AsyncSession use `await publish_follow_up_async(...)`"
        )
        raise ValidationError(msg)
    return publish(session, topic, payload, key=key, type=type, headers=follow_up_headers(cause, headers))


def publish_follow_up_async(
    session: AsyncSession,
    cause: Envelope,
    topic: str,
    payload: JSONValue | object,
    *,
    key: str | None = None,
    type: str | None = None,  # noqa: A002 - CloudEvents name
    headers: Mapping[str, str] | None = None,
) -> Awaitable[uuid.UUID]:
    """Async form of :func:`publish_follow_up`: ``await`` it.

    Raises:
        ValidationError: ``session`` is a sync ``Session`` (use :func:`publish_follow_up`).

    .. versionadded:: 0.1
    """
    candidate: object = session
    if not isinstance(candidate, AsyncSession | AsyncConnection):
        msg = "publish_follow_up_async needs an AsyncSession; with a sync Session use publish_follow_up(...)"
        raise ValidationError(msg)
    return publish(session, topic, payload, key=key, type=type, headers=follow_up_headers(cause, headers))
