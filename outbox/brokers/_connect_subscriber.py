"""``connect_subscriber(url)``: the subscribe half of the broker named by a URL."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from outbox.brokers._connect import NATS_EXTRA_HINT, NATS_SCHEMES
from outbox.brokers._subscriber import Subscriber
from outbox.brokers.redis_streams import DEFAULT_SOCKET_TIMEOUT, RedisStreamsSubscriber
from outbox.brokers.sql_table_subscribe import SqlTableSubscriber
from outbox.errors import ConfigError

__all__ = ["REDIS_SCHEMES", "connect_subscriber"]

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def connect_subscriber(
    url: str, *, socket_timeout: dt.timedelta = DEFAULT_SOCKET_TIMEOUT, schema: str | None = None
) -> Subscriber:
    """Return the subscriber for ``url``: Redis Streams for ``redis://``, ``rediss://``, ``unix://``.

    NATS JetStream for ``nats://`` and ``tls://`` (the ``nats`` extra).
    Any other URL is a SQLAlchemy database URL holding the SQL-table broker
    (``sqlite:///broker.db``, ``postgresql+psycopg://...``). Nothing is sent
    until the first call. ``schema`` is the database schema of the SQL-table
    broker's tables (PostgreSQL); Redis ignores it.

    .. versionadded:: 0.1
    """
    if not isinstance(url, str) or not url:
        msg = "no broker URL: pass --broker or set OUTBOXKIT_BROKER_URL"
        raise ConfigError(msg)
    scheme = urlsplit(url).scheme.lower()
    if scheme in REDIS_SCHEMES:
        return RedisStreamsSubscriber.from_url(url, socket_timeout=socket_timeout)
    if scheme in NATS_SCHEMES:
        try:
            from outbox.brokers.nats_jetstream import NatsJetStreamSubscriber  # noqa: PLC0415 - optional
        except ImportError:
            raise ConfigError(NATS_EXTRA_HINT) from None
        return NatsJetStreamSubscriber.from_url(url)
    return SqlTableSubscriber.from_url(url, schema=schema)
