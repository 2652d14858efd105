"""Replies: how a participant answers a saga command, and how the orchestrator reads the answer.

A reply is an ordinary outbox message, published in the participant's own
transaction (so it exists if and only if the participant's effects commit),
to the command's ``reply_to`` topic, carrying the command's saga headers back.
Its payload is ``{"ok": bool, "data": object | null, "reason": str | null}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Mapping
from typing import overload

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from inbox import follow_up_headers
from outbox import Envelope, JSONValue, OutboxConfig, publish

from ._errors import SagaMessageError
from ._headers import (
    REPLY_TO,
    SAGA_TYPE,
    envelope_label,
    parse_coordinates,
)

__all__ = ["REPLY_TYPE", "parse_reply", "reply"]

REPLY_TYPE = "saga.reply"
"""The ``type`` of every reply message."""


@overload
def reply(
    session: Session | Connection,
    command: Envelope,
    *,
    ok: bool,
    data: Mapping[str, JSONValue] | None = ...,
    reason: str | None = ...,
    config: OutboxConfig | None = ...,
) -> uuid.UUID: ...
@overload
def reply(
    session: AsyncSession | AsyncConnection,
    command: Envelope,
    *,
    ok: bool,
    data: Mapping[str, JSONValue] | None = ...,
    reason: str | None = ...,
    config: OutboxConfig | None = ...,
) -> Awaitable[uuid.UUID]: ...
def reply(
    session: Session | Connection | AsyncSession | AsyncConnection,
    command: Envelope,
    *,
    ok: bool,
    data: Mapping[str, JSONValue] | None = None,
    reason: str | None = None,
    config: OutboxConfig | None = None,
) -> uuid.UUID | Awaitable[uuid.UUID]:
    """Answer a saga command through the outbox, in the participant's transaction.

    Call it from the handler of the command, in the same transaction as the
    step's effects; with an ``AsyncSession``, ``await`` the result.

    Args:
        session: the participant's session (never committed here).
        command: the command being answered.
        ok: ``True`` when the step (or compensation) was done; ``False`` when
            it was refused for good (the saga then compensates).
        data: merged into the saga's data on success (e.g. a payment id the
            compensation will need).
        reason: why the step was refused; shown in the saga's step log.
        config: the participant's outbox.

    Returns:
        The reply's message id (an awaitable with an async session).

    Raises:
        SagaMessageError: ``command`` is not a saga command (no saga headers).

    Example::

        @registry.handler("payments.commands", types="ChargeCustomer")
        def charge(message: Envelope, session: Session) -> None:
            declined = ...
            saga.reply(session, message, ok=not declined, reason="card declined" if declined else None)

    .. versionadded:: 0.1
    """
    label = envelope_label(command)
    coords = parse_coordinates(command.headers, label)
    reply_to = command.headers.get(REPLY_TO)
    if not reply_to:
        raise SagaMessageError(f"{label} lacks the 'reply_to' header")
    if data is not None and not isinstance(data, Mapping):
        raise SagaMessageError(f"reply data must be a mapping or None, got {type(data).__name__}")
    headers = coords.headers()
    if saga_type := command.headers.get(SAGA_TYPE):
        headers[SAGA_TYPE] = saga_type
    headers = follow_up_headers(command, headers)
    payload = {"ok": bool(ok), "data": None if data is None else dict(data), "reason": reason}
    return publish(
        session,
        reply_to,
        payload,
        key=str(coords.saga_id),
        type=REPLY_TYPE,
        headers=headers,
        config=config,
    )


def parse_reply(envelope: Envelope) -> tuple[bool, JSONValue, str | None]:
    """``(ok, data, reason)`` of a reply message.

    Raises:
        SagaMessageError: the payload is not a reply.
    """
    payload = envelope.payload
    if not isinstance(payload, Mapping) or not isinstance(payload.get("ok"), bool):
        raise SagaMessageError(f"{envelope_label(envelope)} is not a saga reply (no boolean 'ok')")
    data = payload.get("data")
    if data is not None and not isinstance(data, Mapping):
        raise SagaMessageError(f"{envelope_label(envelope)}: reply data must be an object or null")
    reason = payload.get("reason")
    return bool(payload["ok"]), data, None if reason is None else str(reason)
