"""Options declared once, each with its environment variable; defaults come from the components' configs.

One rule names every variable:

- an option that means the same to every command that has it reads
  ``OUTBOXKIT_<FLAG>`` and is declared here once (:data:`DbOpt`,
  :data:`BrokerOpt`, :data:`SchemaOpt`, :data:`TableOpt`, the stream layout,
  :data:`GroupOpt`, :data:`OnceOpt`; the log options on the root command);
- an option of one command reads ``OUTBOXKIT_<COMMAND>_<FLAG>``
  (:func:`command_option`): ``relay --batch-size`` is ``OUTBOXKIT_RELAY_BATCH_SIZE``
  and ``consume --batch-size`` is ``OUTBOXKIT_CONSUME_BATCH_SIZE``, so one
  environment can configure both daemons without one reading the other's value.

tests/unit/test_cli_settings.py walks the whole command tree and fails when a
variable is read by two options that are not this one declaration.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Any

import typer

from brokers import StreamLayout
from outbox import ConfigError, OutboxConfig

from ._context import BROKER_URL_ENV, DATABASE_URL_ENV

__all__ = [
    "DEFAULT_PARTITIONS_PER_TOPIC",
    "DEFAULT_STREAM_PREFIX",
    "DEFAULT_TABLE",
    "LOOPBACK",
    "BrokerOpt",
    "DbOpt",
    "DefaultPartitionsOpt",
    "GroupOpt",
    "OnceOpt",
    "SagaTimerTopicOpt",
    "SchemaOpt",
    "StreamPrefixOpt",
    "TableOpt",
    "TopicPartitionsOpt",
    "command_option",
    "config_default",
    "parse_topic_partitions",
    "require",
]

# Metrics servers of every daemon bind here unless told otherwise: /metrics
# names topics, groups and relays, which is nobody else's business.
LOOPBACK = "127.0.0.1"


def config_default(config: type[Any], name: str) -> Any:  # noqa: ANN401 - a field of any type
    """The default of field ``name`` of the dataclass ``config``, in CLI units (durations: seconds)."""
    found = {f.name: f for f in dataclasses.fields(config)}[name]
    if found.default is not dataclasses.MISSING:
        value = found.default
    elif found.default_factory is not dataclasses.MISSING:
        value = found.default_factory()
    else:  # pragma: no cover - only fields with defaults are options
        msg = f"{config.__name__}.{name} has no default"
        raise TypeError(msg)
    return value.total_seconds() if isinstance(value, dt.timedelta) else value


def command_option(command: str, flag: str, help_text: str, *, env_name: str | None = None) -> Any:  # noqa: ANN401 - typer's OptionInfo
    """An option only ``command`` has: its variable is ``OUTBOXKIT_<COMMAND>_<FLAG>``.

    ``env_name`` replaces the flag part where the flag already starts with the
    command's name (``relay --relay-id``: ``OUTBOXKIT_RELAY_ID``, not ``..._RELAY_RELAY_ID``).
    """
    name = env_name or flag.lstrip("-")
    env = f"OUTBOXKIT_{command}_{name}".replace("-", "_").upper()
    return typer.Option(flag, envvar=env, help=help_text)


DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar=DATABASE_URL_ENV,
        help="Database URL of the service (SQLAlchemy form, e.g. postgresql+psycopg://user@host/db).",
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
DEFAULT_TABLE: str = config_default(OutboxConfig, "table")
SchemaOpt = Annotated[
    str | None,
    typer.Option("--schema", envvar="OUTBOXKIT_SCHEMA", help="Database schema of the toolkit's tables."),
]
# The stream layout must be the same for the relay and every consumer: one variable each.
StreamPrefixOpt = Annotated[
    str,
    typer.Option("--stream-prefix", envvar="OUTBOXKIT_STREAM_PREFIX", help="Prefix of every stream name."),
]
DEFAULT_STREAM_PREFIX: str = config_default(StreamLayout, "prefix")
# Where operators' saga requests go (`saga retry|abort`, the dashboard's buttons): the orchestrator's timers.
SagaTimerTopicOpt = Annotated[
    str,
    typer.Option(
        "--timer-topic",
        envvar="OUTBOXKIT_SAGA_TIMER_TOPIC",
        help="The saga orchestrator's timer topic (Orchestrator(timer_topic=...)).",
    ),
]
TopicPartitionsOpt = Annotated[
    str,
    typer.Option(
        "--topic-partitions",
        envvar="OUTBOXKIT_TOPIC_PARTITIONS",
        help="Streams per topic, e.g. orders=4,payments=2 (the same for the relay and its consumers).",
    ),
]
DefaultPartitionsOpt = Annotated[
    int,
    typer.Option(
        "--default-partitions", envvar="OUTBOXKIT_DEFAULT_PARTITIONS", help="Streams of any other topic."
    ),
]
DEFAULT_PARTITIONS_PER_TOPIC: int = config_default(StreamLayout, "default_partitions")
GroupOpt = Annotated[
    str | None,
    typer.Option("--group", envvar="OUTBOXKIT_GROUP", help="Consumer group; also the inbox consumer name."),
]
OnceOpt = Annotated[
    bool,
    typer.Option(
        "--once",
        envvar="OUTBOXKIT_ONCE",
        help="Drain what is due (relay: the outbox; consume: every stream), then exit.",
    ),
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
