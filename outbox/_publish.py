"""``publish``: add messages to the outbox inside the caller's transaction.

The caller owns the transaction: these functions execute one INSERT on the
session or connection they are given and never commit, flush other objects or
roll back. Everything is validated first, so a refused message leaves the
transaction exactly as it was.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import re
import uuid
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import uuid_utils.compat as uuid_utils
from sqlalchemy import Connection, Table, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from ._dberrors import driver_reason, is_missing_table
from ._envelope import key_hash
from ._serializer import JSONValue, check_jsonb_text, default_serializer
from ._tracing import creation_headers
from .config import OutboxConfig
from .errors import (
    HeadersError,
    JsonbIncompatibleError,
    KeyTooLongError,
    PayloadTooLargeError,
    SerializationError,
    StorageError,
    TopicError,
    ValidationError,
    tables_missing,
)
from .tables import outbox_tables

__all__ = [
    "TOPIC_PATTERN",
    "Message",
    "publish",
    "publish_many",
    "unawaited_publishes",
    "watch_async_publishes",
]

TOPIC_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,248}"
"""Topics: 1-249 ASCII letters, digits, ``.``, ``_``, ``-``, not starting with punctuation."""
_TOPIC = re.compile(TOPIC_PATTERN)
_MAX_TYPE_LENGTH = 255
_DEFAULT_CONFIG = OutboxConfig()
_PENDING_PUBLISHES = "outboxkit.pending_publishes"
# ``session.info`` key: between watch_async_publishes and unawaited_publishes it
# holds a list, and async publishes are recorded there.

SyncTarget = Session | Connection
AsyncTarget = AsyncSession | AsyncConnection


@dataclass(frozen=True, kw_only=True, slots=True)
class Message:
    """One message for :func:`publish_many`; the arguments of :func:`publish`.

    .. versionadded:: 0.1
    """

    topic: str
    payload: JSONValue | object
    key: str | None = None
    type: str | None = None
    headers: Mapping[str, str] | None = None
    delay: dt.timedelta | None = None
    available_at: dt.datetime | None = None


@overload
def publish(
    target: SyncTarget,
    topic: str,
    payload: JSONValue | object,
    *,
    key: str | None = ...,
    type: str | None = ...,
    headers: Mapping[str, str] | None = ...,
    delay: dt.timedelta | None = ...,
    available_at: dt.datetime | None = ...,
    config: OutboxConfig | None = ...,
) -> uuid.UUID: ...
@overload
def publish(
    target: AsyncTarget,
    topic: str,
    payload: JSONValue | object,
    *,
    key: str | None = ...,
    type: str | None = ...,
    headers: Mapping[str, str] | None = ...,
    delay: dt.timedelta | None = ...,
    available_at: dt.datetime | None = ...,
    config: OutboxConfig | None = ...,
) -> Awaitable[uuid.UUID]: ...
def publish(
    target: SyncTarget | AsyncTarget,
    topic: str,
    payload: JSONValue | object,
    *,
    key: str | None = None,
    type: str | None = None,  # noqa: A002 - CloudEvents name
    headers: Mapping[str, str] | None = None,
    delay: dt.timedelta | None = None,
    available_at: dt.datetime | None = None,
    config: OutboxConfig | None = None,
) -> uuid.UUID | Awaitable[uuid.UUID]:
    """Write one message to the outbox in the transaction of ``target``.

    Args:
        target: the caller's ``Session`` or ``Connection`` (returns the id), or
            ``AsyncSession``/``AsyncConnection`` (returns an awaitable: ``await`` it).
        topic: where the message goes; must match :data:`TOPIC_PATTERN`.
        payload: a JSON document; datetimes, UUIDs, Decimals, dataclasses and
            pydantic models are converted by the default serializer.
        key: ordering key, e.g. the aggregate id; messages with one key are
            delivered in the order they were published.
        type: event or command type; defaults to the topic.
        headers: string metadata (``correlation_id``, ``causation_id``, ...).
        delay: publish no earlier than this long from now.
        available_at: publish no earlier than this instant (timezone-aware).
        config: table names, limits and serializer; the defaults otherwise.

    Returns:
        The message id (a UUIDv7).

    Raises:
        ValidationError: the message was refused; nothing was written and the
            transaction is still usable.
        SchemaMissingError: the outbox table does not exist.

    .. versionadded:: 0.1
    """
    message = Message(
        topic=topic,
        payload=payload,
        key=key,
        type=type,
        headers=headers,
        delay=delay,
        available_at=available_at,
    )
    if isinstance(target, AsyncSession | AsyncConnection):
        first = _first(publish_many(target, [message], config=config))
        _track(target, first)  # both coroutines, so an un-awaited one is closed without a warning
        return first
    return publish_many(target, [message], config=config)[0]


def watch_async_publishes(info: dict[Any, Any]) -> None:
    """Start recording the async publishes made on the session whose ``info`` this is.

    The consumer calls it before a handler runs, and :func:`unawaited_publishes`
    after, so a publish the handler never awaited fails its message instead of
    silently writing nothing.

    .. versionadded:: 0.1
    """
    info[_PENDING_PUBLISHES] = []


def unawaited_publishes(info: dict[Any, Any]) -> int:
    """Stop recording; close the publishes never awaited since :func:`watch_async_publishes`, return how many.

    Closing them means no "coroutine was never awaited" warning on top of the error.

    .. versionadded:: 0.1
    """
    never_started = [
        c
        for c in info.pop(_PENDING_PUBLISHES, [])
        if inspect.iscoroutine(c) and inspect.getcoroutinestate(c) == inspect.CORO_CREATED
    ]
    for coroutine in never_started:
        coroutine.close()
    return len(never_started)


def _track(target: AsyncTarget, pending: Coroutine[Any, Any, object]) -> None:
    tracked = target.info.get(_PENDING_PUBLISHES) if isinstance(target, AsyncSession) else None
    if isinstance(tracked, list):
        tracked.append(pending)


async def _first(ids: Awaitable[list[uuid.UUID]]) -> uuid.UUID:
    return (await ids)[0]


@overload
def publish_many(
    target: SyncTarget, messages: Sequence[Message], *, config: OutboxConfig | None = ...
) -> list[uuid.UUID]: ...
@overload
def publish_many(
    target: AsyncTarget, messages: Sequence[Message], *, config: OutboxConfig | None = ...
) -> Awaitable[list[uuid.UUID]]: ...
def publish_many(
    target: SyncTarget | AsyncTarget,
    messages: Sequence[Message],
    *,
    config: OutboxConfig | None = None,
) -> list[uuid.UUID] | Awaitable[list[uuid.UUID]]:
    """Write several messages with one multi-row INSERT; ids in input order.

    All messages are validated before anything is written: one bad message
    refuses the whole call. Same targets and errors as :func:`publish`.

    .. versionadded:: 0.1
    """
    cfg = config or _DEFAULT_CONFIG
    candidate: object = messages  # runtime checks for untyped callers
    if not isinstance(candidate, Sequence) or isinstance(candidate, str | bytes):
        msg = "messages must be a sequence of Message"
        raise ValidationError(msg)
    now = dt.datetime.now(dt.UTC)
    rows = [_row(m, cfg, now) for m in messages]
    table = outbox_tables(cfg).outbox
    ids = [row["message_id"] for row in rows]
    if isinstance(target, AsyncSession | AsyncConnection):
        pending = _insert_async(target, table, rows, ids)
        _track(target, pending)
        return pending
    sync_target: object = target
    if not isinstance(sync_target, Session | Connection):
        msg = (
            "publish needs a SQLAlchemy Session, Connection, AsyncSession or AsyncConnection,"
            f" got {type(target).__name__}"
        )
        raise ValidationError(msg)
    if rows:
        try:
            sync_target.execute(insert(table), rows)
        except DBAPIError as exc:
            raise _storage_error(exc, table) from exc
    return ids


async def _insert_async(
    target: AsyncTarget, table: Table, rows: list[dict[str, Any]], ids: list[uuid.UUID]
) -> list[uuid.UUID]:
    if rows:
        try:
            await target.execute(insert(table), rows)
        except DBAPIError as exc:
            raise _storage_error(exc, table) from exc
    return ids


def _storage_error(exc: DBAPIError, table: Table) -> StorageError:
    if is_missing_table(exc):
        return tables_missing(f"outbox table {table.fullname!r}")
    return StorageError(f"could not write to the outbox: {driver_reason(exc)}")


def _row(message: object, cfg: OutboxConfig, now: dt.datetime) -> dict[str, Any]:
    if not isinstance(message, Message):
        msg = f"expected Message, got {type(message).__name__}"
        raise ValidationError(msg)
    topic = _check_topic(message.topic)
    key = _check_key(message.key, cfg)
    type_ = _check_type(message.type, topic)
    headers_json = _check_headers(message.headers)
    payload_json = _check_payload(message.payload, cfg)
    message_id = uuid_utils.uuid7()
    # After every check: a refused message gets no span. The create span's context
    # rides in the headers (docs/tracing.md); without OpenTelemetry this is {}.
    trace_headers = creation_headers(topic, message_id, message.headers)
    if trace_headers:  # W3C ASCII values: cannot fail the checks the user headers passed
        headers_json = default_serializer({**(message.headers or {}), **trace_headers})
    return {
        "message_id": message_id,
        "topic": topic,
        "key": key,
        "key_hash": key_hash(key, message_id),
        "type": type_,
        "source": cfg.source,
        "headers": headers_json,
        "payload": payload_json,
        "created_at": now,
        "available_at": _available_at(message, now),
        "attempts": 0,
    }


def _check_topic(topic: object) -> str:
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
        msg = f"topic {topic!r:.80} does not match {TOPIC_PATTERN}"
        raise TopicError(msg)
    return topic


def _check_key(key: object, cfg: OutboxConfig) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str):
        msg = f"key must be a non-empty str or None, got {type(key).__name__}"
        raise ValidationError(msg)
    if not key:
        msg = "key is empty: pass None for a message without a key"
        raise ValidationError(msg)
    if len(key) > cfg.max_key_length:
        msg = f"key is {len(key)} characters long; the limit is {cfg.max_key_length}"
        raise KeyTooLongError(msg)
    _check_text(key, "key")
    return key


def _check_type(value: object, topic: str) -> str:
    if value is None:
        return topic
    if not isinstance(value, str) or not value or len(value) > _MAX_TYPE_LENGTH:
        msg = f"type must be a non-empty str of at most {_MAX_TYPE_LENGTH} characters"
        raise ValidationError(msg)
    _check_text(value, "type")
    return value


def _check_text(value: str, what: str) -> None:
    try:
        check_jsonb_text(value)
    except ValidationError as exc:
        msg = f"{what} holds a NUL character or a lone surrogate"
        raise ValidationError(msg) from exc


def _check_headers(headers: object) -> str:
    if headers is None:
        return "{}"
    if not isinstance(headers, Mapping):
        msg = f"headers must be a mapping of str to str, got {type(headers).__name__}"
        raise HeadersError(msg)
    for name, value in headers.items():
        if not isinstance(name, str) or not name or not isinstance(value, str):
            msg = f"headers must map non-empty str to str; bad entry {name!r:.40}"
            raise HeadersError(msg)
    try:
        return default_serializer(dict(headers))
    except ValidationError as exc:
        raise HeadersError(f"headers refused: {exc}") from exc


def _check_payload(payload: object, cfg: OutboxConfig) -> str:
    try:
        text = cfg.serializer(payload)
    except ValidationError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        msg = f"payload is not serializable by the configured serializer: {exc}"
        raise SerializationError(msg) from exc
    result: object = text
    if not isinstance(result, str):
        msg = "the serializer must return str"
        raise ValidationError(msg)
    if cfg.serializer is not default_serializer:
        _check_custom_json(text)
    size = len(text.encode("utf-8"))
    if size > cfg.max_payload_bytes:
        msg = f"payload is {size} bytes serialized; the limit is {cfg.max_payload_bytes}"
        raise PayloadTooLargeError(msg)
    return text


def _check_custom_json(text: str) -> None:
    # A custom serializer gets the same checks as the default one, so a bad
    # document is refused here rather than by the database at INSERT time,
    # which on PostgreSQL would abort the caller's transaction.
    try:
        json.loads(text)
    except ValueError as exc:
        msg = f"the serializer returned invalid JSON: {exc}"
        raise SerializationError(msg) from exc
    check_jsonb_text(text)
    if any(token in text for token in ("NaN", "Infinity")):
        json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> object:
    msg = f"payload holds {name}, which JSON and jsonb refuse"
    raise JsonbIncompatibleError(msg)


def _available_at(message: Message, now: dt.datetime) -> dt.datetime:
    if message.delay is not None and message.available_at is not None:
        msg = "give delay or available_at, not both"
        raise ValidationError(msg)
    if message.delay is not None:
        if not isinstance(message.delay, dt.timedelta) or message.delay < dt.timedelta(0):
            msg = "delay must be a non-negative timedelta"
            raise ValidationError(msg)
        return now + message.delay
    if message.available_at is not None:
        when = message.available_at
        if not isinstance(when, dt.datetime) or when.tzinfo is None:
            msg = "available_at must be a timezone-aware datetime"
            raise ValidationError(msg)
        return when.astimezone(dt.UTC)
    return now
