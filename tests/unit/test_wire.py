"""The wire codec: encode/decode round trips, and strict per-entry decoding."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outbox import DecodeError, decode_entry, default_serializer, encode_entry, key_hash

_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=20,
)


def _entry(**overrides: str) -> dict[bytes, bytes]:
    fields = encode_entry(
        message_id=uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057"),
        topic="orders.created",
        type="OrderCreated",
        source="orders",
        key="o-1",
        time=dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC),
        headers_json='{"correlation_id":"c-1"}',
        data_json='{"total":"9.90"}',
    )
    fields.update(overrides)
    return {k.encode(): v.encode() for k, v in fields.items()}


@given(payload=_json, key=st.none() | _text.filter(bool), headers=st.dictionaries(_text.filter(bool), _text))
def test_wire_round_trip_keeps_every_field(payload: object, key: str | None, headers: dict[str, str]) -> None:
    """Whatever the payload, key and headers, decode(encode(x)) gives x back."""
    message_id = uuid.uuid4()
    time = dt.datetime(2026, 11, 26, 9, 0, 0, 123456, tzinfo=dt.UTC)
    fields = encode_entry(
        message_id=message_id,
        topic="t.x",
        type="T",
        source="svc",
        key=key,
        time=time,
        headers_json=default_serializer(headers),
        data_json=default_serializer(payload),
    )
    raw = {k.encode(): v.encode("utf-8") for k, v in fields.items()}
    envelope = decode_entry(raw)
    assert envelope.id == message_id
    assert envelope.key == key
    assert envelope.time == time
    assert dict(envelope.headers) == headers
    assert envelope.payload == json.loads(default_serializer(payload))


def test_wire_fields_use_cloudevents_names() -> None:
    """The entry carries CloudEvents 1.0 attribute names and the key as subject."""
    fields = {k.decode(): v.decode() for k, v in _entry().items()}
    assert fields["specversion"] == "1.0"
    assert fields["subject"] == "o-1"
    assert fields["time"] == "2026-11-26T09:00:00.000000Z"
    assert fields["datacontenttype"] == "application/json"
    assert set(fields) == {
        "specversion", "id", "type", "source", "subject", "time", "datacontenttype", "topic", "headers", "data",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.pop(b"id"), "missing field 'id'"),
        (lambda e: e.pop(b"data"), "missing field 'data'"),
        (lambda e: e.update({b"id": b"not-a-uuid"}), "not a UUID"),
        (lambda e: e.update({b"data": b"{bad json"}), "not valid JSON"),
        (lambda e: e.update({b"data": b"\xff\xfe"}), "not valid UTF-8"),
        (lambda e: e.update({b"time": b"yesterday"}), "RFC 3339"),
        (lambda e: e.update({b"specversion": b"0.3"}), "specversion"),
        (lambda e: e.update({b"headers": b'{"a": 1}'}), "headers"),
        (lambda e: e.update({b"datacontenttype": b"text/xml"}), "datacontenttype"),
    ],
)
def test_wire_decode_refuses_malformed_entries_with_a_reason(mutate: object, reason: str) -> None:
    """Each malformed entry raises DecodeError naming what is wrong."""
    entry = _entry()
    assert callable(mutate)
    mutate(entry)
    with pytest.raises(DecodeError, match=reason):
        decode_entry(entry)


@given(st.dictionaries(st.binary(max_size=12), st.binary(max_size=40), max_size=12))
def test_wire_decode_of_garbage_raises_only_decode_error(garbage: dict[bytes, bytes]) -> None:
    """Arbitrary bytes never crash the decoder with anything but DecodeError."""
    try:
        decode_entry(garbage)
    except DecodeError:
        pass


def _crc32_reference(data: bytes) -> int:
    """Bitwise CRC-32 from the reflected IEEE 802.3 polynomial 0xEDB88320, independent of zlib."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("123456789", 0xCBF43926),  # the published CRC-32 check value
        ("", 0),
        ("o-1", 0xCD3E0FDA),
        ("customer-42", _crc32_reference(b"customer-42")),
        ("\u00e9t\u00e9", _crc32_reference("\u00e9t\u00e9".encode())),
    ],
)
def test_key_hash_matches_fixed_crc32_vectors(key: str, expected: int) -> None:
    """key_hash is CRC-32 of the UTF-8 key, checked against fixed vectors, not against itself (#9)."""
    assert key_hash(key, uuid.UUID(int=0)) == expected


def test_key_hash_of_keyless_message_is_crc32_of_id_bytes() -> None:
    """A message without a key hashes its 16 id bytes, checked against the reference CRC-32 (#9)."""
    message_id = uuid.UUID("0190f0e0-0000-7000-8000-000000000001")
    assert key_hash(None, message_id) == _crc32_reference(message_id.bytes)
