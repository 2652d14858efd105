"""Settings of the write side: table names, limits and the serializer.

Defaults are named constants so docs and tests can refer to them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ._serializer import Serializer, default_serializer
from .errors import ConfigError

__all__ = [
    "DEFAULT_MAX_KEY_LENGTH",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_SOURCE",
    "DEFAULT_TABLE",
    "MAX_IDENTIFIER_BYTES",
    "OutboxConfig",
    "validate_identifier",
]

DEFAULT_TABLE = "outbox"
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_MAX_KEY_LENGTH = 255
DEFAULT_SOURCE = "outboxkit"
MAX_IDENTIFIER_BYTES = 63
"""PostgreSQL's NAMEDATALEN - 1: longer names would be silently truncated."""

# Suffixes the toolkit appends to the outbox table name for its other tables;
# the longest must still fit in 63 bytes.
_LONGEST_SUFFIX = "_dead_letter"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def validate_identifier(name: str, *, what: str, reserve: int = 0) -> str:
    """Return ``name`` if it is a plain lower-case SQL identifier, else raise ConfigError.

    Plain means ``[a-z_][a-z0-9_]*``: no quoting is ever needed, so the same
    name works unchanged on PostgreSQL and SQLite and cannot smuggle SQL.
    ``reserve`` bytes are kept free for suffixes derived from the name.
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        msg = (
            f"{what} {name!r} is not a plain identifier"
            " (lower-case letters, digits and _, not starting with a digit)"
        )
        raise ConfigError(msg)
    if len(name.encode()) + reserve > MAX_IDENTIFIER_BYTES:
        limit = MAX_IDENTIFIER_BYTES - reserve
        msg = f"{what} {name!r} is longer than {limit} bytes (PostgreSQL would truncate it)"
        raise ConfigError(msg)
    return name


@dataclass(frozen=True, kw_only=True, slots=True)
class OutboxConfig:
    """Where the outbox lives and what it accepts.

    Attributes:
        table: name of the outbox table; its dead-letter table is ``<table>_dead_letter``.
        schema: database schema (PostgreSQL) holding the tables; ``None`` = default.
        max_payload_bytes: largest serialized payload accepted, in UTF-8 bytes.
        max_key_length: longest key accepted, in characters.
        source: CloudEvents ``source`` of the messages this service publishes.
        serializer: turns payloads into JSON text.

    .. versionadded:: 0.1
    """

    table: str = DEFAULT_TABLE
    schema: str | None = None
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_key_length: int = DEFAULT_MAX_KEY_LENGTH
    source: str = DEFAULT_SOURCE
    serializer: Serializer = field(default=default_serializer, compare=False)

    def __post_init__(self) -> None:
        validate_identifier(self.table, what="table name", reserve=len(_LONGEST_SUFFIX))
        if self.schema is not None:
            validate_identifier(self.schema, what="schema name")
        if not isinstance(self.max_payload_bytes, int) or self.max_payload_bytes <= 0:
            msg = f"max_payload_bytes must be a positive integer, got {self.max_payload_bytes!r}"
            raise ConfigError(msg)
        if not isinstance(self.max_key_length, int) or not 0 < self.max_key_length <= 1024:  # noqa: PLR2004
            msg = f"max_key_length must be between 1 and 1024, got {self.max_key_length!r}"
            raise ConfigError(msg)
        if not isinstance(self.source, str) or not self.source:
            msg = "source must be a non-empty string"
            raise ConfigError(msg)
        serializer: object = self.serializer  # a runtime check for untyped callers
        if not callable(serializer):
            msg = "serializer must be callable"
            raise ConfigError(msg)
