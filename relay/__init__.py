"""The relay: forwards committed outbox rows to the broker, at least once, in per-key order.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LEASE_TTL,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PARTITIONS,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_REPLAY_WINDOW,
    DEFAULT_RETRY_BASE,
    DEFAULT_RETRY_MAX,
    RelayConfig,
)
from ._db import check_schema, make_engine, storage_error
from ._dead_letters import DeadLetters
from ._http import MetricsServer
from ._metrics import RelayMetrics
from ._relay import Relay, RelayStats
from ._status import OPEN_TX_AGE_S, Backlog, read_backlog, read_open_transactions

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_LEASE_TTL",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_PARTITIONS",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_REPLAY_WINDOW",
    "DEFAULT_RETRY_BASE",
    "DEFAULT_RETRY_MAX",
    "OPEN_TX_AGE_S",
    "Backlog",
    "DeadLetters",
    "MetricsServer",
    "Relay",
    "RelayConfig",
    "RelayMetrics",
    "RelayStats",
    "check_schema",
    "make_engine",
    "read_backlog",
    "read_open_transactions",
    "storage_error",
]
