"""The wire fields of an entry <-> a NATS message: ``data`` is the payload, the rest are headers.

The header names are the CloudEvents attribute names of the Redis fields
(docs/wire-format.md), so a consumer in any language reads the same names;
``Nats-Msg-Id`` carries ``id`` again for JetStream's de-duplication.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["MSG_ID_HEADER", "from_message", "to_message"]

MSG_ID_HEADER = "Nats-Msg-Id"
_DATA = "data"


def to_message(fields: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
    """The payload and headers of one entry.

    Raises:
        ValueError: a value holds CR or LF, which a NATS header cannot carry.
    """
    headers: dict[str, str] = {}
    for name, value in fields.items():
        if name == _DATA:
            continue
        if "\r" in value or "\n" in value:
            msg = f"field {name!r} holds a line break, which a NATS header cannot carry"
            raise ValueError(msg)
        headers[name] = value
    if "id" in fields:
        headers[MSG_ID_HEADER] = fields["id"]
    return fields.get(_DATA, "").encode(), headers


def from_message(data: bytes, headers: Mapping[str, str] | None) -> dict[bytes | str, bytes | str]:
    """The wire fields of a delivered message (``data`` as bytes: decoding is the caller's, per entry)."""
    fields: dict[bytes | str, bytes | str] = {
        name: value for name, value in (headers or {}).items() if not name.startswith("Nats-")
    }
    fields[_DATA] = data
    return fields
