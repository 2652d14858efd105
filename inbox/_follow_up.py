"""Follow-up messages: correlation and causation headers copied from the message handled."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Mapping

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from outbox import Envelope, JSONValue, ValidationError, publish

__all__ = ["follow_up_headers", "publish_follow_up", "publish_follow_up_async"]


def follow_up_headers(cause: Envelope, headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers for a message produced while handling ``cause``.

    ``correlation_id`` is copied (or starts as the cause's id), ``causation_id``
    is the cause's id; ``headers`` are added on top and win.

    .. versionadded:: 0.1
    """
    result = {
        "correlation_id": cause.correlation_id or str(cause.id),
        "causation_id": str(cause.id),
    }
    result.update(headers or {})
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
