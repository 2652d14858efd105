"""The wire codec: one outbox row <-> one broker entry (a flat str -> str map).

Documented field by field in ``docs/wire-format.md``; this module is the one
place that knows it. Decoding is strict and per entry: a bad entry raises
:class:`DecodeError` with the reason and never affects its neighbours.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from ._envelope import Envelope
from .errors import DecodeError

if TYPE_CHECKING:
    from ._serializer import JSONValue

__all__ = [
    "CONTENT_TYPE",
    "SPEC_VERSION",
    "WireFields",
    "decode_entry",
    "encode_entry",
    "format_time",
]

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
WireFields = dict[str, str]
# The CloudEvents distributed-tracing extension attributes (W3C Trace Context):
# stored in the row's headers by publish, top-level attributes on the wire.
TRACE_ATTRIBUTES = ("traceparent", "tracestate")


def format_time(value: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds and a ``Z`` suffix."""
    if value.tzinfo is dt.UTC:  # psycopg on a UTC session: the common case, one call
        return value.isoformat(timespec="microseconds")[:-6] + "Z"  # drop "+00:00"
    if value.tzinfo is None:  # SQLite hands back naive UTC datetimes
        value = value.replace(tzinfo=dt.UTC)
    # isoformat is several times faster than strftime; same text.
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def encode_entry(
    *,
    message_id: uuid.UUID,
    topic: str,
    type: str,  # noqa: A002 - CloudEvents name
    source: str,
    key: str | None,
    time: dt.datetime,
    headers_json: str,
    data_json: str,
) -> WireFields:
    """Build the stream entry for one message from its stored (JSON text) form."""
    fields: WireFields = {
        "specversion": SPEC_VERSION,
        "id": str(message_id),
        "type": type,
        "source": source,
        "time": format_time(time),
        "datacontenttype": CONTENT_TYPE,
        "topic": topic,
        "headers": headers_json,
        "data": data_json,
    }
    if key is not None:
        fields["subject"] = key
    if '"traceparent"' in headers_json:  # only traced rows pay for a JSON round trip
        _lift_trace_context(fields, headers_json)
    return fields


def _lift_trace_context(fields: WireFields, headers_json: str) -> None:
    """Move ``traceparent``/``tracestate`` from the headers to their CloudEvents attributes."""
    headers = json.loads(headers_json)
    if not isinstance(headers, dict):
        return
    for name in TRACE_ATTRIBUTES:
        value = headers.pop(name, None)
        if isinstance(value, str):
            fields[name] = value
    fields["headers"] = json.dumps(headers, ensure_ascii=False, separators=(",", ":"))


def _lenient_text(fields: Mapping[bytes | str, bytes | str], name: str) -> str | None:
    """An optional attribute that must never fail the entry: undecodable bytes become U+FFFD."""
    raw = fields.get(name)
    if raw is None:
        raw = fields.get(name.encode())
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return raw if isinstance(raw, str) else None


def _text(fields: Mapping[bytes | str, bytes | str], name: str, *, required: bool) -> str | None:
    raw = fields.get(name)
    if raw is None:
        raw = fields.get(name.encode())
    if raw is None:
        if required:
            msg = f"missing field {name!r}"
            raise DecodeError(msg)
        return None
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            msg = f"field {name!r} is not valid UTF-8"
            raise DecodeError(msg) from exc
    if isinstance(raw, str):
        return raw
    msg = f"field {name!r} has type {type(raw).__name__}, expected text"  # type: ignore[unreachable]
    raise DecodeError(msg)


def _req(fields: Mapping[bytes | str, bytes | str], name: str) -> str:
    value = _text(fields, name, required=True)
    assert value is not None  # noqa: S101 - required=True never returns None
    return value


def decode_entry(fields: Mapping[bytes | str, bytes | str]) -> Envelope:
    """Decode one broker entry into an :class:`Envelope`.

    Raises:
        DecodeError: a required field is missing, not UTF-8, or malformed.
    """
    spec = _req(fields, "specversion")
    if spec != SPEC_VERSION:
        msg = f"unsupported specversion {spec!r}"
        raise DecodeError(msg)
    id_text = _req(fields, "id")
    try:
        message_id = uuid.UUID(id_text)
    except ValueError as exc:
        msg = "field 'id' is not a UUID"
        raise DecodeError(msg) from exc
    time_text = _req(fields, "time")
    try:
        time = dt.datetime.fromisoformat(time_text)
    except ValueError as exc:
        msg = "field 'time' is not an RFC 3339 timestamp"
        raise DecodeError(msg) from exc
    content_type = _text(fields, "datacontenttype", required=False)
    if content_type not in (None, CONTENT_TYPE):
        msg = f"unsupported datacontenttype {content_type!r}"
        raise DecodeError(msg)
    return Envelope(
        id=message_id,
        topic=_req(fields, "topic"),
        type=_req(fields, "type"),
        source=_req(fields, "source"),
        key=_text(fields, "subject", required=False),
        time=time if time.tzinfo else time.replace(tzinfo=dt.UTC),
        headers=_decode_headers(_text(fields, "headers", required=False)),
        payload=cast("JSONValue", _decode_json(_req(fields, "data"), "data")),
        # Passed on as received; the consumer checks them and ignores bad ones (never a failure).
        traceparent=_lenient_text(fields, "traceparent"),
        tracestate=_lenient_text(fields, "tracestate"),
    )


def _decode_json(text: str, name: str) -> object:
    try:
        return json.loads(text)
    except ValueError as exc:
        msg = f"field {name!r} is not valid JSON: {exc.args[0] if exc.args else exc}"
        raise DecodeError(msg) from exc


def _decode_headers(text: str | None) -> dict[str, str]:
    if text is None:
        return {}
    value = _decode_json(text, "headers")
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        msg = "field 'headers' is not a JSON object of strings"
        raise DecodeError(msg)
    return value
