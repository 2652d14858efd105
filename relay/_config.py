"""Settings of the relay: defaults are named constants, validated on construction."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

from brokers import StreamLayout
from outbox import ConfigError, OutboxConfig
from outbox._redact import redact_url

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_LEASE_TTL",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_ON_DEAD_LETTER",
    "DEFAULT_PARTITIONS",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_REPLAY_WINDOW",
    "DEFAULT_RETRY_BASE",
    "DEFAULT_RETRY_MAX",
    "ON_DEAD_LETTER_CHOICES",
    "RelayConfig",
]

DEFAULT_BATCH_SIZE = 500
DEFAULT_POLL_INTERVAL = dt.timedelta(seconds=0.5)
DEFAULT_PARTITIONS = 16
DEFAULT_LEASE_TTL = dt.timedelta(seconds=10)
DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_RETRY_BASE = dt.timedelta(seconds=1)
DEFAULT_RETRY_MAX = dt.timedelta(minutes=5)
DEFAULT_REPLAY_WINDOW = dt.timedelta(minutes=1)
MAX_BATCH_SIZE = 10_000
DEFAULT_MAX_BATCH_BYTES = 16 * 1024 * 1024
# park-key by default: later messages of a dead-lettered key wait for the
# operator (retry or purge), so per-key order holds for money and stock.
DEFAULT_ON_DEAD_LETTER = "park-key"
ON_DEAD_LETTER_CHOICES = ("park-key", "skip")


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayConfig:
    """How a relay runs.

    Attributes:
        database_url: SQLAlchemy URL of the database holding the outbox.
        broker_url: ``redis://``, ``rediss://``, ``unix://``, ``memory://`` or a SQLAlchemy URL.
        outbox: outbox table names (must match the writers').
        layout: topic -> stream mapping (must match the consumers').
        batch_size: rows per claim and per broker round trip.
        max_batch_bytes: payload bytes per batch; claims shrink below ``batch_size``
            while rows are large, so memory stays bounded.
        poll_interval: longest sleep when idle (LISTEN/NOTIFY wakes earlier on PostgreSQL).
        partitions: relay partitions of the key space; fixed when the first relay starts.
        lease_ttl: a partition lease not renewed for this long may be taken over.
        max_attempts: broker rejections of one message before it becomes a dead letter.
        retry_base / retry_max: backoff of a rejected message (exponential, jitter, capped).
        replay_window: keep published rows this long and re-publish them if the
            broker loses its data; zero deletes rows as soon as they are published.
        max_len: most entries kept per stream (``MAXLEN ~`` on Redis, exact on the
            SQL-table broker; ``None``: unbounded).
        listen: use LISTEN/NOTIFY on PostgreSQL (polling stays the fallback).
        relay_id: this relay's name in leases and logs (default ``host-pid-random``).
        once: drain what is due and exit.
        on_dead_letter: ``"park-key"`` (default): later rows of a dead-lettered key wait
            until the dead letter is retried or purged (issue #9); ``"skip"``: they go on.

    .. versionadded:: 0.1
    """

    # Left out of the generated repr (it would show passwords); __repr__ below
    # shows them redacted.
    database_url: str = field(repr=False)
    broker_url: str = field(repr=False)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    layout: StreamLayout = field(default_factory=StreamLayout)
    batch_size: int = DEFAULT_BATCH_SIZE
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    poll_interval: dt.timedelta = DEFAULT_POLL_INTERVAL
    partitions: int = DEFAULT_PARTITIONS
    lease_ttl: dt.timedelta = DEFAULT_LEASE_TTL
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_base: dt.timedelta = DEFAULT_RETRY_BASE
    retry_max: dt.timedelta = DEFAULT_RETRY_MAX
    replay_window: dt.timedelta = DEFAULT_REPLAY_WINDOW
    max_len: int | None = None
    listen: bool = True
    relay_id: str | None = None
    once: bool = False
    on_dead_letter: str = DEFAULT_ON_DEAD_LETTER

    def __repr__(self) -> str:
        """Like the dataclass repr, with both URLs redacted."""
        rest = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr)
        urls = f"database_url={redact_url(self.database_url)!r}, broker_url={redact_url(self.broker_url)!r}"
        return f"RelayConfig({urls}, {rest})"

    def __post_init__(self) -> None:
        _check(1 <= self.batch_size <= MAX_BATCH_SIZE, f"batch size must be 1..{MAX_BATCH_SIZE}")
        _check(self.max_batch_bytes >= 1024, "max batch bytes must be at least 1024")  # noqa: PLR2004
        _check(1 <= self.partitions <= 1024, "partitions must be 1..1024")  # noqa: PLR2004
        _check(self.max_attempts >= 1, "max attempts must be at least 1")
        _check(self.poll_interval > dt.timedelta(0), "poll interval must be positive")
        _check(self.lease_ttl >= dt.timedelta(seconds=1), "lease TTL must be at least 1 second")
        _check(dt.timedelta(0) < self.retry_base <= self.retry_max, "need 0 < retry base <= retry max")
        _check(self.replay_window >= dt.timedelta(0), "replay window must not be negative")
        _check(self.max_len is None or self.max_len > 0, "stream max length must be positive")
        _check(
            self.on_dead_letter in ON_DEAD_LETTER_CHOICES,
            f"on dead letter must be one of {', '.join(ON_DEAD_LETTER_CHOICES)}",
        )
        _check(self.relay_id is None or 0 < len(self.relay_id) <= 200, "relay id must be 1..200 characters")  # noqa: PLR2004


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
