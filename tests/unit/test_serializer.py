"""The default serializer: what it converts and what it refuses on every database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import uuid
from decimal import Decimal

import pydantic
import pytest

from outbox import JsonbIncompatibleError, SerializationError, default_serializer


@dataclasses.dataclass
class Line:
    sku: str
    qty: int


class Status(enum.Enum):
    NEW = "new"


class Order(pydantic.BaseModel):
    id: uuid.UUID
    total: Decimal
    at: dt.datetime


def test_serializer_converts_application_types() -> None:
    """Datetimes, UUIDs, Decimals, enums, dataclasses, sets and pydantic models become JSON."""
    oid = uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057")
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    text = default_serializer(
        {
            "id": oid,
            "at": at,
            "day": dt.date(2026, 1, 2),
            "price": Decimal("19.90"),
            "status": Status.NEW,
            "line": Line("sku-1", 2),
            "tags": {"b", "a"},
            "order": Order(id=oid, total=Decimal("1.10"), at=at),
        }
    )
    doc = json.loads(text)
    assert doc["id"] == str(oid)
    assert doc["at"] == "2026-01-02T03:04:05+00:00"
    assert doc["day"] == "2026-01-02"
    assert doc["price"] == "19.90"
    assert doc["status"] == "new"
    assert doc["line"] == {"sku": "sku-1", "qty": 2}
    assert sorted(doc["tags"]) == ["a", "b"]
    assert doc["order"]["total"] == "1.10"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, Decimal("NaN"), Decimal("Infinity")])
def test_serializer_refuses_non_finite_numbers(value: object) -> None:
    """NaN and infinities are refused: jsonb would refuse them at commit."""
    with pytest.raises(JsonbIncompatibleError):
        default_serializer({"x": [1, value]})


@pytest.mark.parametrize("text", ["a\x00b", "\ud800", "x\udfffy"])
def test_serializer_refuses_nul_and_lone_surrogates(text: str) -> None:
    """NUL characters and lone surrogates are refused, in values and in keys."""
    with pytest.raises(JsonbIncompatibleError):
        default_serializer({"v": text})
    with pytest.raises(JsonbIncompatibleError):
        default_serializer({text: 1})


def test_serializer_accepts_escaped_text_that_only_looks_like_nul() -> None:
    """A literal backslash-u-0000 in text is six harmless characters, not a NUL."""
    text = default_serializer({"v": "\\u0000 and \\ud800"})
    assert json.loads(text) == {"v": "\\u0000 and \\ud800"}


def test_serializer_keeps_unicode_and_astral_characters() -> None:
    """Valid surrogate pairs (emoji) and non-ASCII text pass unchanged."""
    assert json.loads(default_serializer({"v": "zażółć 🎉"})) == {"v": "zażółć 🎉"}


@pytest.mark.parametrize("value", [b"bytes", object(), {1j}, {(1, 2): "tuple key"}])
def test_serializer_refuses_unserializable_values(value: object) -> None:
    """Values JSON cannot carry raise SerializationError, a ValueError."""
    with pytest.raises(SerializationError) as info:
        default_serializer({"v": value})
    assert isinstance(info.value, ValueError)


def test_serializer_refuses_circular_structures() -> None:
    """A payload that contains itself is a SerializationError, not a crash."""
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(SerializationError):
        default_serializer(loop)


def test_serializer_writes_naive_datetime_without_offset() -> None:
    """A naive datetime is written as ISO 8601 with no offset, aware ones keep theirs (pinned for docs, #9)."""
    naive = dt.datetime(2030, 1, 2, 3, 4, 5)  # noqa: DTZ001 - naive on purpose
    aware = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert json.loads(default_serializer({"naive": naive, "aware": aware, "day": naive.date()})) == {
        "naive": "2030-01-02T03:04:05",
        "aware": "2030-01-02T03:04:05+02:00",
        "day": "2030-01-02",
    }
