"""The message envelope: what a consumer receives, field for field.

Attribute names follow CloudEvents 1.0 where one exists (``id``, ``type``,
``source``, ``subject`` for the key, ``time``, ``data``); see
``docs/wire-format.md``.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._serializer import JSONValue

__all__ = ["Envelope", "key_hash"]


def key_hash(key: str | None, message_id: uuid.UUID) -> int:
    """Return the stable 32-bit hash that places a message in a partition.

    CRC-32 (IEEE 802.3, as in zlib) of the UTF-8 key, or of the 16 id bytes
    for a message without a key; ``partition = key_hash % partitions``. Any
    language can compute it, so producers elsewhere can partition alike.
    """
    data = key.encode() if key is not None else message_id.bytes
    return zlib.crc32(data)


@dataclass(frozen=True, kw_only=True, slots=True)
class Envelope:
    """One message as published and as delivered.

    Attributes:
        id: UUIDv7 message id, unique and time-ordered; the dedup key of the inbox.
        topic: the topic it was published to.
        type: the event or command type (defaults to the topic).
        source: the service that published it (CloudEvents ``source``).
        key: ordering key (an aggregate id), or ``None``; CloudEvents ``subject``.
        time: when it was published (UTC).
        headers: string metadata, e.g. ``correlation_id`` and ``causation_id``.
        payload: the JSON document (``data``).
        traceparent: the W3C ``traceparent`` of the message's ``create`` span, as received
            (CloudEvents distributed-tracing extension), or ``None``.
        tracestate: the W3C ``tracestate`` that goes with it, or ``None``.

    .. versionadded:: 0.1
    """

    id: uuid.UUID
    topic: str
    type: str
    source: str
    key: str | None
    time: dt.datetime
    headers: Mapping[str, str] = field(default_factory=dict)
    payload: JSONValue = None
    traceparent: str | None = None
    tracestate: str | None = None

    @property
    def correlation_id(self) -> str | None:
        """The ``correlation_id`` header, if any."""
        return self.headers.get("correlation_id")

    @property
    def causation_id(self) -> str | None:
        """The ``causation_id`` header, if any."""
        return self.headers.get("causation_id")
