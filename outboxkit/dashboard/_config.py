"""What one dashboard serves: which database, tables, broker and saga topics, and whether it may act."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from inbox import Registry
from outbox import ConfigError

__all__ = ["DEFAULT_REFRESH_S", "DEFAULT_TIMER_TOPIC", "DashboardConfig", "new_token"]

DEFAULT_REFRESH_S = 5
DEFAULT_TIMER_TOPIC = "saga.timers"
_MIN_TOKEN = 16  # a guessable token would make the login page a formality


def new_token() -> str:
    """A random action token, printed at start when none is given."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True, kw_only=True, slots=True)
class DashboardConfig:
    """The dashboard's settings.

    Attributes:
        db_url: the service's database (outbox, dead letters, relays, inbox, sagas).
        table: the outbox table name.
        schema: the schema of the toolkit's tables, if not the default.
        broker_url: the broker, for consumer groups' lag (optional).
        stream_prefix: the prefix of the consumer groups' streams.
        timer_topic: the orchestrator's timer topic (saga retry/abort requests go there).
        token: what an operator types to log in; actions need it.
        read_only: show no action and refuse every one.
        refresh_s: how often the overview reloads itself (0: never).
        registry: the consumer's handlers, to retry consumer dead letters (optional).

    .. versionadded:: 0.1
    """

    db_url: str
    table: str = "outbox"
    schema: str | None = None
    broker_url: str | None = None
    stream_prefix: str = ""
    timer_topic: str = DEFAULT_TIMER_TOPIC
    token: str = field(default_factory=new_token, repr=False)
    read_only: bool = False
    refresh_s: int = DEFAULT_REFRESH_S
    registry: Registry | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.db_url:
            msg = "the dashboard needs a database URL"
            raise ConfigError(msg)
        if len(self.token) < _MIN_TOKEN:
            msg = f"the dashboard token must be at least {_MIN_TOKEN} characters"
            raise ConfigError(msg)
        if self.refresh_s < 0:
            msg = f"refresh must not be negative, got {self.refresh_s}"
            raise ConfigError(msg)
