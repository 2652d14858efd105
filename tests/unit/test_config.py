"""OutboxConfig refuses names and limits that would break or be truncated."""

from __future__ import annotations

import pytest

from outbox import ConfigError, OutboxConfig


@pytest.mark.parametrize(
    "name",
    [
        "outbox; DROP TABLE users",
        'outbox"',
        "Outbox",
        "1outbox",
        "out box",
        "",
        "outbox--",
        "öutbox",
        "a" * 52,  # + "_dead_letter" is over 63 bytes
    ],
)
def test_config_refuses_unsafe_or_long_table_names(name: str) -> None:
    """A table name that is not a plain identifier, or too long, is a ConfigError."""
    with pytest.raises(ConfigError):
        OutboxConfig(table=name)


def test_config_refuses_long_schema_names() -> None:
    """A 64-byte schema name would be truncated by PostgreSQL: refused."""
    OutboxConfig(schema="s" * 63)
    with pytest.raises(ConfigError, match="longer than 63 bytes"):
        OutboxConfig(schema="s" * 64)


def test_config_accepts_longest_table_name() -> None:
    """51 characters leave room for the _dead_letter suffix within 63 bytes."""
    assert OutboxConfig(table="a" * 51).table == "a" * 51


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_payload_bytes": 0},
        {"max_payload_bytes": -1},
        {"max_key_length": 0},
        {"max_key_length": 5000},
        {"source": ""},
        {"serializer": "json"},
    ],
)
def test_config_refuses_bad_limits(kwargs: dict[str, object]) -> None:
    """Limits out of range and a non-callable serializer are ConfigErrors (ValueErrors)."""
    with pytest.raises(ConfigError) as info:
        OutboxConfig(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
