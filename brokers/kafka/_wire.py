"""The one Kafka marshaller of both halves: wire fields <-> CloudEvents Kafka binary-mode records.

The CloudEvents Kafka protocol binding, binary content mode: every attribute
is a header ``ce_<name>`` (UTF-8 text), ``datacontenttype`` is the
``content-type`` header, ``data`` is the record value, and the ``subject``
(the outbox key) is also the record key, so Kafka partitions and compacts by
it. The extensions ``topic`` and ``headers`` travel as ``ce_topic`` and
``ce_headers``. A consumer in any language with a CloudEvents SDK reads these
records as events; docs/wire-format.md has the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["fields_from_record", "record_from_fields"]

_CONTENT_TYPE = "content-type"
_PREFIX = "ce_"

Headers = list[tuple[str, str | bytes | None]]


def record_from_fields(fields: Mapping[str, str]) -> tuple[bytes | None, bytes, Headers]:
    """``(key, value, headers)`` of the record carrying the wire ``fields`` of one message."""
    headers: Headers = []
    for name, text in fields.items():
        if name == "data":
            continue
        header = _CONTENT_TYPE if name == "datacontenttype" else _PREFIX + name
        headers.append((header, text.encode()))
    key = fields.get("subject")
    return (None if key is None else key.encode()), fields.get("data", "").encode(), headers


def fields_from_record(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None
) -> dict[bytes | str, bytes | str]:
    """The wire fields of a consumed record; a record without CloudEvents headers decodes to no ``id``.

    Decoding (and its errors: missing ``id``, not UTF-8, ...) is left to
    :func:`outbox.decode_entry`, per record, as for every broker.
    """
    fields: dict[bytes | str, bytes | str] = {}
    for name, raw in headers or ():
        if raw is None:
            continue
        if name == _CONTENT_TYPE:
            fields["datacontenttype"] = raw
        elif name.startswith(_PREFIX):
            fields[name[len(_PREFIX) :]] = raw
    if value is not None:
        fields["data"] = value
    return fields
