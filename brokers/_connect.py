"""Choose a broker by URL scheme: one table for both halves.

==========================================  =====================================
URL                                         broker
==========================================  =====================================
``redis://[user:pw@]host[:port][/db]``      Redis Streams
``rediss://...``                            Redis Streams over TLS
``unix:///path/redis.sock[?db=0]``          Redis Streams over a Unix socket
``nats://[user:pw@]h1:4222,h2:4222[?...]``  NATS JetStream (``outboxkit[nats]``)
``tls://...``                               NATS JetStream over TLS
``memory://[name]``                         in-process broker (tests; publish half only)
any SQLAlchemy URL (``sqlite:///b.db``,     SQL-table broker in that database
``postgresql+psycopg://...``)
==========================================  =====================================

Adapters are imported only when their scheme is asked for, so a new broker
(a sub-package of :mod:`brokers`) adds one row to :data:`_SCHEMES` and
nothing else changes here.

.. versionadded:: 0.1
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from outbox._redact import redact_url
from outbox.errors import ConfigError

from ._publisher import Publisher
from ._subscriber import Subscriber

__all__ = ["broker_kind", "connect_publisher", "connect_subscriber"]

NATS_EXTRA_HINT = "the NATS broker needs the nats extra: pip install 'outboxkit[nats]'"

# URL scheme (before any ``+driver``) -> broker sub-package.
_SCHEMES = {
    "redis": "redis_streams",
    "rediss": "redis_streams",
    "unix": "redis_streams",
    "nats": "nats_jetstream",
    "tls": "nats_jetstream",
    "memory": "memory",
    "sqlite": "sql_table",
    "postgresql": "sql_table",
    "postgres": "sql_table",
}


def broker_kind(url: str) -> str:
    """The broker sub-package serving ``url``, e.g. ``redis_streams``, ``nats_jetstream``, ``sql_table``.

    Raises:
        ConfigError: no URL, or its scheme is unknown (password masked).
    """
    if not isinstance(url, str) or not url:
        msg = "no broker URL: pass --broker or set OUTBOXKIT_BROKER_URL"
        raise ConfigError(msg)
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""
    kind = _SCHEMES.get(scheme.split("+", 1)[0])
    if kind is None:
        msg = (
            f"unsupported broker URL {redact_url(url)}: use redis://, rediss://, unix://, nats://, tls://, memory://"
            " or a SQLAlchemy URL (sqlite:///..., postgresql+psycopg://...)"
        )
        raise ConfigError(msg)
    return kind


def connect_publisher(
    url: str, *, key_prefix: str = "", max_len: int | None = None, schema: str | None = None
) -> Publisher:
    """Return the publish half for ``url``; ``key_prefix`` applies to Redis, ``max_len`` to Redis and SQL.

    ``schema`` is the database schema of the SQL-table broker's tables (PostgreSQL).

    Raises:
        ConfigError: the URL is malformed or its scheme unknown (password masked).
    """
    kind = broker_kind(url)
    if kind == "redis_streams":
        from .redis_streams import RedisStreamsPublisher  # noqa: PLC0415 - only the broker asked for

        return RedisStreamsPublisher(url, key_prefix=key_prefix, max_len=max_len)
    if kind == "nats_jetstream":
        try:
            from .nats_jetstream import NatsJetStreamPublisher  # noqa: PLC0415 - optional dependency
        except ImportError:
            raise ConfigError(NATS_EXTRA_HINT) from None
        return NatsJetStreamPublisher(url, key_prefix=key_prefix, max_len=max_len)
    if kind == "memory":
        from .memory import MemoryPublisher, memory_broker  # noqa: PLC0415

        name = url.split("://", 1)[1] or "default"
        return MemoryPublisher(memory_broker(name), name=name)
    from .sql_table import SqlTablePublisher  # noqa: PLC0415

    return SqlTablePublisher(url, max_len=max_len, schema=schema)


def connect_subscriber(
    url: str, *, socket_timeout: dt.timedelta | None = None, schema: str | None = None
) -> Subscriber:
    """Return the subscribe half for ``url``; nothing is sent until the first call.

    ``socket_timeout`` applies to Redis (default
    :data:`brokers.redis_streams.DEFAULT_SOCKET_TIMEOUT`); ``schema`` is the
    database schema of the SQL-table broker's tables (PostgreSQL), ignored by Redis.

    Raises:
        ConfigError: the URL is malformed, its scheme unknown (password masked),
            or ``memory://``, whose subscribe half tests build directly
            (:class:`brokers.memory.MemorySubscriber`).
    """
    kind = broker_kind(url)
    if kind == "redis_streams":
        from .redis_streams import DEFAULT_SOCKET_TIMEOUT, RedisStreamsSubscriber  # noqa: PLC0415

        return RedisStreamsSubscriber.from_url(url, socket_timeout=socket_timeout or DEFAULT_SOCKET_TIMEOUT)
    if kind == "nats_jetstream":
        try:
            from .nats_jetstream import NatsJetStreamSubscriber  # noqa: PLC0415 - optional dependency
        except ImportError:
            raise ConfigError(NATS_EXTRA_HINT) from None
        return NatsJetStreamSubscriber.from_url(url)
    if kind == "memory":
        msg = "memory:// has no subscribe half by URL: build brokers.memory.MemorySubscriber directly"
        raise ConfigError(msg)
    from .sql_table import SqlTableSubscriber  # noqa: PLC0415

    return SqlTableSubscriber.from_url(url, schema=schema)
