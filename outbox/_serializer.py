"""JSON serialization of payloads, with the checks PostgreSQL jsonb applies later.

The default serializer turns the usual application values into JSON: datetimes
and dates (ISO 8601), UUIDs and Decimals (strings, so no precision is lost),
dataclasses, pydantic models (``model_dump(mode="json")``), sets and tuples
(lists). It refuses, on every database, what ``jsonb`` would refuse at commit:
NaN and infinities, the NUL character and lone UTF-16 surrogates, so SQLite and
PostgreSQL accept exactly the same messages.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import re
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TypeAlias

from .errors import JsonbIncompatibleError, SerializationError

JSONValue: TypeAlias = (
    "str | int | float | bool | Mapping[str, JSONValue] | list[JSONValue] | tuple[JSONValue, ...] | None"
)
"""A JSON document as Python values."""

Serializer: TypeAlias = Callable[[object], str]
"""Turns a payload into JSON text; raises :class:`SerializationError` when it cannot."""

# NUL is refused by jsonb; lone surrogates cannot be encoded as UTF-8 at all.
_FORBIDDEN_CHARS = re.compile("[\x00\ud800-\udfff]")


def _default(value: object) -> object:  # noqa: PLR0911 - one branch per supported type
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            msg = f"Decimal {value} is not representable in JSON"
            raise JsonbIncompatibleError(msg)
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):  # pydantic v2 models, without importing pydantic
        return model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if isinstance(value, bytes):
        msg = "bytes are not JSON; encode them (e.g. base64) before publishing"
        raise SerializationError(msg)
    msg = f"object of type {type(value).__name__} is not JSON serializable"
    raise SerializationError(msg)


def default_serializer(payload: object) -> str:
    """Serialize ``payload`` to compact JSON text.

    Raises:
        SerializationError: the payload holds a value JSON cannot represent.
        JsonbIncompatibleError: the payload holds NaN, an infinity, NUL or a lone surrogate.
    """
    try:
        text = json.dumps(
            payload, default=_default, allow_nan=False, ensure_ascii=False, separators=(",", ":")
        )
    except SerializationError:
        raise
    except ValueError as exc:  # allow_nan=False and circular references land here
        if "Out of range float" in str(exc):
            msg = "payload holds NaN or Infinity, which JSON and jsonb refuse"
            raise JsonbIncompatibleError(msg) from exc
        msg = f"payload is not JSON serializable: {exc}"
        raise SerializationError(msg) from exc
    except (TypeError, RecursionError) as exc:
        msg = f"payload is not JSON serializable: {exc}"
        raise SerializationError(msg) from exc
    check_jsonb_text(text)
    return text


def check_jsonb_text(text: str) -> None:
    r"""Raise :class:`JsonbIncompatibleError` if ``text`` holds NUL or a lone surrogate.

    Custom serializers may emit ``\\u0000`` escapes, so the escaped forms are
    refused as well as the raw characters.
    """
    found = _FORBIDDEN_CHARS.search(text)
    if found is not None:
        what = "NUL character" if found.group() == "\x00" else "lone surrogate"
        msg = f"payload holds a {what}, which PostgreSQL jsonb refuses"
        raise JsonbIncompatibleError(msg)
    if "\\u" in text:
        lowered = text.lower()
        if "\\u0000" in lowered or re.search(r"\\ud[89a-f][0-9a-f]{2}", lowered):
            _check_escapes(text)


def _check_escapes(text: str) -> None:
    # Decode to find out whether \u escapes form valid pairs; a string that
    # merely contains a backslash followed by "u0000" as text is escaped as
    # "\\u0000" and decodes to harmless characters.
    def scan(value: object) -> None:
        if isinstance(value, str):
            if _FORBIDDEN_CHARS.search(value):
                msg = "payload holds a NUL character or lone surrogate, which PostgreSQL jsonb refuses"
                raise JsonbIncompatibleError(msg)
        elif isinstance(value, dict):
            for k, v in value.items():
                scan(k)
                scan(v)
        elif isinstance(value, list):
            for item in value:
                scan(item)

    scan(json.loads(text))
