"""Options shared by the relay's subcommands (each names its environment variable)."""

from __future__ import annotations

from typing import Annotated

import typer

from outbox import ConfigError

from ._context import BROKER_URL_ENV, DATABASE_URL_ENV

__all__ = ["BrokerOpt", "DbOpt", "SchemaOpt", "TableOpt", "parse_topic_partitions", "require"]

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar=DATABASE_URL_ENV,
        help="Database URL of the outbox (SQLAlchemy form).",
        show_default=False,
    ),
]
BrokerOpt = Annotated[
    str | None,
    typer.Option(
        "--broker",
        envvar=BROKER_URL_ENV,
        help=(
            "Broker URL: redis://, rediss:// (TLS), unix://, or a SQLAlchemy URL for the SQL-table broker."
        ),
        show_default=False,
    ),
]
TableOpt = Annotated[str, typer.Option("--table", envvar="OUTBOXKIT_TABLE", help="Outbox table name.")]
SchemaOpt = Annotated[
    str | None,
    typer.Option("--schema", envvar="OUTBOXKIT_SCHEMA", help="Schema of the tables."),
]


def require(value: str | None, flag: str, env: str) -> str:
    """Return ``value`` or raise a one-line ConfigError naming the flag and variable."""
    if not value:
        msg = f"no {flag.lstrip('-')} URL: pass {flag} or set {env}"
        raise ConfigError(msg)
    return value


def parse_topic_partitions(text: str) -> dict[str, int]:
    """Parse ``orders=4,payments=2`` into a mapping."""
    result: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        topic, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            msg = f"--topic-partitions expects topic=count[,topic=count...], got {item!r}"
            raise ConfigError(msg)
        result[topic.strip()] = int(count)
    return result
