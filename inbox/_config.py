"""Settings of the consumer runner; defaults are named constants."""

from __future__ import annotations

import datetime as dt
import enum
import os
import re
import secrets
import socket
from dataclasses import dataclass, field

from brokers import StreamLayout
from outbox import ConfigError
from outbox.config import validate_identifier

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BLOCK",
    "DEFAULT_CLAIM_IDLE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_LEASE_TTL",
    "DEFAULT_MAX_DELIVERIES",
    "DEFAULT_ON_DEAD_LETTER",
    "DEFAULT_RETENTION",
    "DEFAULT_RETRY_DELAY",
    "ConsumerConfig",
    "Mode",
    "default_consumer_name",
]

DEFAULT_BATCH_SIZE = 100
DEFAULT_BLOCK = dt.timedelta(seconds=2)
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_RETRY_DELAY = dt.timedelta(milliseconds=200)
DEFAULT_MAX_RETRY_DELAY = dt.timedelta(seconds=5)
DEFAULT_CLAIM_IDLE = dt.timedelta(seconds=60)
DEFAULT_LEASE_TTL = dt.timedelta(seconds=15)
DEFAULT_CONCURRENCY = 8
DEFAULT_RETENTION = dt.timedelta(days=7)
DEFAULT_RETENTION_INTERVAL = dt.timedelta(minutes=5)
DEFAULT_RETENTION_BATCH = 1000
DEFAULT_SHUTDOWN_TIMEOUT = dt.timedelta(seconds=30)
# park-key by default, as on the relay: later messages of a dead-lettered key
# wait for the operator, so per-key order holds for money and stock (issue #9).
DEFAULT_ON_DEAD_LETTER = "park-key"
ON_DEAD_LETTER_CHOICES = ("park-key", "skip")
_NAME = re.compile(r"[A-Za-z0-9._:@-]{1,200}")


class Mode(enum.StrEnum):
    """How messages are committed.

    .. versionadded:: 0.1
    """

    MESSAGE = "message"
    """One transaction per message (the default, the simplest semantics)."""
    BATCH = "batch"
    """One transaction per read batch; after a failure the batch is redone one message at a time."""


def default_consumer_name() -> str:
    """``<host>-<pid>-<random>``: unique per process, so a restarted process never owns old entries."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:60] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _positive(name: str, value: dt.timedelta) -> None:
    if not isinstance(value, dt.timedelta) or value <= dt.timedelta(0):
        msg = f"{name} must be a positive timedelta, got {value!r}"
        raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True, slots=True)
class ConsumerConfig:
    """How a :class:`~inbox.ConsumerRunner` reads, retries and cleans up.

    Attributes:
        group: the consumer group, also the inbox's consumer name (e.g. ``"billing"``).
        consumer_name: this process within the group; unique per process by default.
        layout: topic to stream mapping; must match the relay's.
        mode: per-message transactions, or batched.
        batch_size: entries read at once per partition; bounds memory per partition.
        block: how long a read waits for new entries (below the broker's socket timeout).
        max_deliveries: deliveries of a failing message before it is dead-lettered.
        retry_delay: first delay before retrying a failed message; doubles, capped at ``max_retry_delay``.
        max_retry_delay: the longest delay between retries.
        claim_idle: pending entries idle this long are claimed (``XAUTOCLAIM``) from their consumer.
        lease_ttl: how long a partition lease lasts without renewal (renewed every third of it).
        concurrency: most batches this process handles at once; it does not limit which partitions are read.
        retention: inbox records older than this are deleted (``None``: never).
        retention_interval: how often the runner deletes old inbox records.
        retention_batch: rows deleted per transaction.
        shutdown_timeout: how long in-flight messages may finish after a stop request.
        schema: database schema (PostgreSQL) of the toolkit's tables, put first on the
            connections' search_path (see :func:`outbox.use_schema`); ``None`` = default.
        on_dead_letter: ``"park-key"`` (default): later messages of a dead-lettered key wait
            until it is retried or purged; ``"skip"``: they are handled at once.

    .. versionadded:: 0.1
    """

    group: str
    consumer_name: str = field(default_factory=default_consumer_name)
    layout: StreamLayout = field(default_factory=StreamLayout)
    mode: Mode = Mode.MESSAGE
    batch_size: int = DEFAULT_BATCH_SIZE
    block: dt.timedelta = DEFAULT_BLOCK
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    retry_delay: dt.timedelta = DEFAULT_RETRY_DELAY
    max_retry_delay: dt.timedelta = DEFAULT_MAX_RETRY_DELAY
    claim_idle: dt.timedelta = DEFAULT_CLAIM_IDLE
    lease_ttl: dt.timedelta = DEFAULT_LEASE_TTL
    concurrency: int = DEFAULT_CONCURRENCY
    retention: dt.timedelta | None = DEFAULT_RETENTION
    retention_interval: dt.timedelta = DEFAULT_RETENTION_INTERVAL
    retention_batch: int = DEFAULT_RETENTION_BATCH
    shutdown_timeout: dt.timedelta = DEFAULT_SHUTDOWN_TIMEOUT
    schema: str | None = None
    on_dead_letter: str = DEFAULT_ON_DEAD_LETTER

    def __post_init__(self) -> None:
        if self.schema is not None:
            validate_identifier(self.schema, what="schema name")
        for name in ("group", "consumer_name"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _NAME.fullmatch(value):
                msg = f"{name} {value!r:.80} must be 1-200 of A-Z a-z 0-9 . _ : @ -"
                raise ConfigError(msg)
        for name in ("batch_size", "max_deliveries", "concurrency", "retention_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                msg = f"{name} must be a positive integer, got {value!r}"
                raise ConfigError(msg)
        for name in (
            "block",
            "retry_delay",
            "max_retry_delay",
            "claim_idle",
            "lease_ttl",
            "retention_interval",
        ):
            _positive(name, getattr(self, name))
        if self.retention is not None:
            _positive("retention", self.retention)
        if not isinstance(self.shutdown_timeout, dt.timedelta) or self.shutdown_timeout < dt.timedelta(0):
            msg = "shutdown_timeout must be a non-negative timedelta"
            raise ConfigError(msg)
        self._check_choices()

    def _check_choices(self) -> None:
        if self.on_dead_letter not in ON_DEAD_LETTER_CHOICES:
            choices = ", ".join(ON_DEAD_LETTER_CHOICES)
            msg = f"on_dead_letter must be one of {choices}, got {self.on_dead_letter!r:.40}"
            raise ConfigError(msg)
        if self.mode not in set(Mode):
            msg = f"mode must be one of {', '.join(Mode)}, got {self.mode!r}"
            raise ConfigError(msg)

    @property
    def poison_deliveries(self) -> int:
        """Deliveries after which an entry is dead-lettered without running its handler.

        Twice ``max_deliveries``: a delivery is also counted when the consumer
        dies or loses the partition before reaching the entry, so only an entry
        delivered this often is taken for a message that kills its consumer.
        """
        return 2 * self.max_deliveries

    @property
    def redelivery_horizon(self) -> dt.timedelta:
        """How late a redelivery can come: claim idle time x poison limit, plus one lease."""
        return self.claim_idle * self.poison_deliveries + self.lease_ttl
